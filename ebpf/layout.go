//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Sizes of the structs shared with the kernel programs (redirect.c). The
// upstream ones are fixed by docs/protocol.md §5.2; tests compare all of them
// with the BTF in the compiled object.
const (
	destinationEntrySize = 24 // struct gpa_destination_entry
	auditKeySize         = 8  // struct gpa_audit_key
	auditEventSize       = 20 // struct gpa_audit_event
	callerKeySize        = 12 // struct gpa_caller_key
	callerRecordSize     = 48 // struct gpa_caller_record
)

const ipprotoTCP = 6

// All fields are u32 (one u64) in the host's byte order. Addresses are the
// four network-order bytes read as a native u32, and ports are htons(port)
// in the low 16 bits of a native u32: the encoding bpf_sock_addr uses, so
// the programs copy them without conversion.
var ne = binary.NativeEndian

// ip4Word encodes an IPv4 address as the programs store it.
func ip4Word(a netip.Addr) uint32 {
	b := a.As4()
	return ne.Uint32(b[:])
}

func wordIP4(w uint32) netip.Addr {
	var b [4]byte
	ne.PutUint32(b[:], w)
	return netip.AddrFrom4(b)
}

// portWord encodes a port as htons(port) widened to a native u32.
func portWord(p uint16) uint32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return uint32(ne.Uint16(b[:]))
}

func wordPort(w uint32) uint16 {
	var b [2]byte
	ne.PutUint16(b[:], uint16(w))
	return binary.BigEndian.Uint16(b[:])
}

// checkIPv4 unmaps a and insists on an IPv4 address and a non-zero port:
// the programs only ever compare IPv4 words (connect6 unmaps first).
func checkIPv4(ap netip.AddrPort) (netip.AddrPort, error) {
	a := ap.Addr().Unmap()
	if !a.Is4() || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %v (need IPv4 address and non-zero port)", ErrInvalidAddress, ap)
	}
	return netip.AddrPortFrom(a, ap.Port()), nil
}

// marshalDestination encodes gpa_destination_entry for a TCP IPv4
// destination: ip[0], three zero words, port, protocol.
func marshalDestination(ap netip.AddrPort) []byte {
	b := make([]byte, destinationEntrySize)
	ne.PutUint32(b[0:], ip4Word(ap.Addr()))
	ne.PutUint32(b[16:], portWord(ap.Port()))
	ne.PutUint32(b[20:], ipprotoTCP)
	return b
}

// unmarshalDestination decodes gpa_destination_entry. ok is false for
// entries this package would not write (IPv6 words, other protocols).
func unmarshalDestination(b []byte) (ap netip.AddrPort, ok bool) {
	if len(b) != destinationEntrySize || ne.Uint32(b[20:]) != ipprotoTCP {
		return netip.AddrPort{}, false
	}
	if !bytes.Equal(b[4:16], make([]byte, 12)) || ne.Uint32(b[16:])>>16 != 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(wordIP4(ne.Uint32(b[0:])), wordPort(ne.Uint32(b[16:]))), true
}

// marshalAuditKey encodes gpa_audit_key: protocol, then the local port in
// host order (not htons: the sock_ops context gives it that way, as does
// upstream's skc_num).
func marshalAuditKey(localPort uint16) []byte {
	b := make([]byte, auditKeySize)
	ne.PutUint32(b[0:], ipprotoTCP)
	ne.PutUint32(b[4:], uint32(localPort))
	return b
}

// marshalCallerKey encodes gpa_caller_key: upstream's audit key plus the
// client's IPv4 address as the programs store addresses.
func marshalCallerKey(client netip.AddrPort) []byte {
	b := make([]byte, callerKeySize)
	ne.PutUint32(b[0:], ipprotoTCP)
	ne.PutUint32(b[4:], uint32(client.Port()))
	ne.PutUint32(b[8:], ip4Word(client.Addr()))
	return b
}

// AuditRecord is the process that made one redirected connection, as the
// kernel saw it at connect() time.
type AuditRecord struct {
	// PID is the thread group id (what userspace calls the process id).
	PID uint32
	// UID and GID are the real user and group ids at connect() time.
	UID uint32
	GID uint32
	// Comm is the task's command name (at most 15 bytes, may be truncated;
	// use /proc/<PID>/exe for identity).
	Comm string
	// CgroupID is the cgroup v2 id (the cgroup directory's inode number).
	CgroupID uint64
	// OriginalDst is the destination the process dialled before the
	// redirect.
	OriginalDst netip.AddrPort
}

// IsRoot reports whether the caller ran as uid 0, upstream's is_root.
func (r AuditRecord) IsRoot() bool { return r.UID == 0 }

// ParseCallerRecord decodes one value of gpa_caller_map (a
// gpa_caller_record), as read from the map or its pin, for tools that
// inspect a running agent's callers:
//
//	+0 cgroup_id u64, +8 uid, +12 gid, +16 tgid, +20 destination_ipv4,
//	+24 destination_port, +28 protocol, +32 comm[16]
func ParseCallerRecord(b []byte) (AuditRecord, error) {
	if len(b) != callerRecordSize {
		return AuditRecord{}, fmt.Errorf("caller record is %d bytes, want %d", len(b), callerRecordSize)
	}
	comm := b[32:48]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	return AuditRecord{
		CgroupID:    ne.Uint64(b[0:]),
		UID:         ne.Uint32(b[8:]),
		GID:         ne.Uint32(b[12:]),
		PID:         ne.Uint32(b[16:]),
		OriginalDst: netip.AddrPortFrom(wordIP4(ne.Uint32(b[20:])), wordPort(ne.Uint32(b[24:]))),
		Comm:        string(comm),
	}, nil
}
