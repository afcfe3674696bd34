//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metadatasec/gpa/msp"
)

// netipEqual lets go-cmp compare netip values, whose fields are unexported.
var netipEqual = cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{})

// bytesOf encodes v as the kernel sees it: the map's key or value bytes.
func bytesOf(t *testing.T, v any) []byte {
	t.Helper()
	b, err := binary.Append(nil, ne, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The upstream structs keep the sizes docs/protocol.md §5.2 fixes, so tools
// that read policy_map and audit_map keep working; the generated types are
// the object's BTF, so this guards redirect.c against a compatible-looking
// edit.
func TestUpstreamStructSizes(t *testing.T) {
	got := map[string]int{
		"gpa_destination_entry": binary.Size(redirectGpaDestinationEntry{}),
		"gpa_audit_key":         binary.Size(redirectGpaAuditKey{}),
		"gpa_audit_event":       binary.Size(redirectGpaAuditEvent{}),
	}
	want := map[string]int{"gpa_destination_entry": 24, "gpa_audit_key": 8, "gpa_audit_event": 20}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upstream struct sizes (-upstream +ours):\n%s", diff)
	}
	// encoding/binary and the Go compiler agree (no padding), so what
	// cilium/ebpf marshals is what binary.Size says.
	if n := int(unsafe.Sizeof(redirectGpaCallerRecord{})); n != binary.Size(redirectGpaCallerRecord{}) || n != 64 {
		t.Errorf("gpa_caller_record is %d bytes in memory, %d encoded; want 64", n, binary.Size(redirectGpaCallerRecord{}))
	}
}

// Byte examples from docs/protocol.md §5.2, which are for little-endian hosts:
// the only ones this package builds for (its object is bpfel).
func TestDestinationBytes(t *testing.T) {
	tests := []struct {
		name string
		ap   netip.AddrPort
		want []byte
	}{
		{"wireserver", netip.MustParseAddrPort("168.63.129.16:80"), []byte{
			0xA8, 0x3F, 0x81, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			0x00, 0x50, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00}},
		{"proxy", netip.MustParseAddrPort("127.0.0.1:3080"), []byte{
			0x7F, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			0x0C, 0x08, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00}},
		{"hostga", netip.MustParseAddrPort("168.63.129.16:32526"), []byte{
			0xA8, 0x3F, 0x81, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			0x7F, 0x0E, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := destinationEntry(tt.ap)
			if diff := cmp.Diff(tt.want, bytesOf(t, e)); diff != "" {
				t.Errorf("destinationEntry(%v) bytes (-want +got):\n%s", tt.ap, diff)
			}
			back, ok := e.addrPort()
			if !ok || back != tt.ap {
				t.Errorf("round trip = %v, %v; want %v", back, ok, tt.ap)
			}
		})
	}
	// The native u32 words match the constants upstream documents.
	wire := destinationEntry(netip.MustParseAddrPort("168.63.129.16:80"))
	imds := destinationEntry(netip.MustParseAddrPort("169.254.169.254:80"))
	words := []uint32{wire.Ip[0], imds.Ip[0], wire.Port}
	if diff := cmp.Diff([]uint32{0x10813FA8, 0xFEA9FEA9, 0x5000}, words); diff != "" {
		t.Errorf("native words (-want +got):\n%s", diff)
	}
}

func TestAuditKeyBytes(t *testing.T) {
	// The port is in host order, unlike the destination port.
	got := bytesOf(t, auditKey(0xC350)) // 50000
	want := []byte{6, 0, 0, 0, 0x50, 0xC3, 0, 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("auditKey bytes (-want +got):\n%s", diff)
	}
}

func TestCallerKeyBytes(t *testing.T) {
	got := bytesOf(t, callerKey(netip.MustParseAddrPort("127.0.0.1:50000")))
	want := []byte{6, 0, 0, 0, 0x50, 0xC3, 0, 0, 127, 0, 0, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("callerKey bytes (-want +got):\n%s", diff)
	}
}

// The offsets are the C struct's, written out by hand on purpose: the
// test is what says the generated type decodes the kernel's bytes.
func TestParseCallerRecord(t *testing.T) {
	b := make([]byte, 64)
	ne.PutUint64(b[0:], 0x1122334455)
	ne.PutUint32(b[8:], 1000)
	ne.PutUint32(b[12:], 1001)
	ne.PutUint32(b[16:], 4242)
	copy(b[20:24], []byte{169, 254, 169, 254})
	ne.PutUint32(b[24:], portWord(80))
	ne.PutUint32(b[28:], ipprotoTCP)
	copy(b[32:], "curl")
	ne.PutUint64(b[48:], 1_234_567_890_123)
	ne.PutUint64(b[56:], 7)
	got, err := ParseCallerRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	want := msp.ConnectRecord{PID: 4242, UID: 1000, GID: 1001, Comm: "curl", CgroupID: 0x1122334455,
		OriginalDst: netip.MustParseAddrPort("169.254.169.254:80"), StartTime: 1_234_567_890_123, ExecID: 7}
	if diff := cmp.Diff(want, got, netipEqual); diff != "" {
		t.Errorf("ParseCallerRecord (-want +got):\n%s", diff)
	}

	// A full 16-byte comm has no terminator and must not be cut short.
	copy(b[32:], "0123456789abcdef")
	got, err = ParseCallerRecord(b)
	if err != nil || got.Comm != "0123456789abcdef" {
		t.Errorf("comm without NUL = %q, %v", got.Comm, err)
	}
	if _, err := ParseCallerRecord(b[:63]); err == nil {
		t.Error("short record accepted")
	}
	// The 48-byte record of versions before the start time and exec id
	// is not silently read with zeros.
	if _, err := ParseCallerRecord(b[:48]); err == nil {
		t.Error("48-byte record of an older version accepted")
	}
}

func TestDestinationEntryRejectsForeignForms(t *testing.T) {
	good := destinationEntry(netip.MustParseAddrPort("10.0.0.1:443"))
	tests := []struct {
		name   string
		mutate func(*redirectGpaDestinationEntry)
	}{
		{"ipv6 word", func(e *redirectGpaDestinationEntry) { e.Ip[1] = 1 }},
		{"udp", func(e *redirectGpaDestinationEntry) { e.Protocol = 17 }},
		{"port high bits", func(e *redirectGpaDestinationEntry) { e.Port |= 0x10000 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := good
			tt.mutate(&e)
			if ap, ok := e.addrPort(); ok {
				t.Errorf("accepted %v", ap)
			}
		})
	}
}

func TestCheckIPv4(t *testing.T) {
	tests := []struct {
		in      string
		want    netip.AddrPort
		wantErr bool
	}{
		{"169.254.169.254:80", netip.MustParseAddrPort("169.254.169.254:80"), false},
		{"[::ffff:168.63.129.16]:32526", netip.MustParseAddrPort("168.63.129.16:32526"), false},
		{"[2001:db8::1]:80", netip.AddrPort{}, true},
		{"127.0.0.1:0", netip.AddrPort{}, true},
	}
	for _, tt := range tests {
		got, err := checkIPv4(netip.MustParseAddrPort(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("checkIPv4(%s) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("checkIPv4(%s) error %v is not ErrInvalidAddress", tt.in, err)
		}
	}
	if _, err := checkIPv4(netip.AddrPort{}); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("zero AddrPort: %v", err)
	}
}
