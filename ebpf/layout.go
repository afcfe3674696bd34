//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/metadatasec/gpa/msp"
)

// The map keys and values are bpf2go's types generated from redirect.c
// (redirect_bpfel.go). What this file adds is how addresses are encoded in
// their fields, which the C types cannot say.

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

// destinationEntry is a TCP IPv4 destination as policy_map stores it: ip[0],
// three zero words, port, protocol.
func destinationEntry(ap netip.AddrPort) redirectGpaDestinationEntry {
	return redirectGpaDestinationEntry{
		Ip:       [4]uint32{ip4Word(ap.Addr())},
		Port:     portWord(ap.Port()),
		Protocol: ipprotoTCP,
	}
}

// addrPort decodes e. ok is false for entries this package would not write
// (IPv6 words, other protocols, a port wider than 16 bits).
func (e redirectGpaDestinationEntry) addrPort() (ap netip.AddrPort, ok bool) {
	if e.Protocol != ipprotoTCP || e.Ip[1] != 0 || e.Ip[2] != 0 || e.Ip[3] != 0 || e.Port>>16 != 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(wordIP4(e.Ip[0]), wordPort(e.Port)), true
}

// auditKey is upstream's audit_map key: protocol, then the local port in
// host order (not htons: the sock_ops context gives it that way, as does
// upstream's skc_num).
func auditKey(localPort uint16) redirectGpaAuditKey {
	return redirectGpaAuditKey{Protocol: ipprotoTCP, SourcePort: uint32(localPort)}
}

// callerKey is gpa_caller_map's key: upstream's audit key plus the client's
// IPv4 address as the programs store addresses.
func callerKey(client netip.AddrPort) redirectGpaCallerKey {
	return redirectGpaCallerKey{Protocol: ipprotoTCP, SourcePort: uint32(client.Port()), SourceIp4: ip4Word(client.Addr())}
}

// connectRecord is the record in the protocol's words.
func (r redirectGpaCallerRecord) connectRecord() msp.ConnectRecord {
	comm := make([]byte, 0, len(r.Comm))
	for _, c := range r.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	return msp.ConnectRecord{
		PID:         r.Tgid,
		UID:         r.Uid,
		GID:         r.Gid,
		Comm:        string(comm),
		CgroupID:    r.CgroupId,
		OriginalDst: netip.AddrPortFrom(wordIP4(r.DestinationIpv4), wordPort(r.DestinationPort)),
		StartTime:   r.StartBoottime,
		ExecID:      r.ExecId,
	}
}

// ParseCallerRecord decodes one value of gpa_caller_map (a struct
// gpa_caller_record, 64 bytes), as read from the map or its pin, for tools
// that inspect a running agent's callers.
func ParseCallerRecord(b []byte) (msp.ConnectRecord, error) {
	var r redirectGpaCallerRecord
	if n := binary.Size(r); len(b) != n {
		return msp.ConnectRecord{}, fmt.Errorf("caller record is %d bytes, want %d", len(b), n)
	}
	if _, err := binary.Decode(b, ne, &r); err != nil {
		return msp.ConnectRecord{}, fmt.Errorf("caller record: %w", err)
	}
	return r.connectRecord(), nil
}
