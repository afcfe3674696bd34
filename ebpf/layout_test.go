//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// netipEqual lets go-cmp compare netip values, whose fields are unexported.
var netipEqual = cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{})

// The Go encoders and the compiled object must agree on every struct size,
// and the upstream structs must keep the sizes docs/protocol.md §5.2 fixes.
func TestStructSizesMatchObject(t *testing.T) {
	spec, err := loadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	size := func(typ btf.Type) int {
		t.Helper()
		n, err := btf.Sizeof(typ)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	got := map[string][2]int{}
	for _, name := range mapNames {
		ms := spec.Maps[name]
		got[name] = [2]int{size(ms.Key), size(ms.Value)}
	}
	want := map[string][2]int{
		"policy_map":     {destinationEntrySize, destinationEntrySize},
		"gpa_exempt_map": {4, 8},
		"audit_map":      {auditKeySize, auditEventSize},
		"gpa_sk_storage": {4, callerRecordSize},
		"gpa_caller_map": {callerKeySize, callerRecordSize},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("map key/value sizes (-want +got):\n%s", diff)
	}
	upstream := map[string]int{"dest": 24, "akey": 8, "aevent": 20}
	ours := map[string]int{"dest": destinationEntrySize, "akey": auditKeySize, "aevent": auditEventSize}
	if diff := cmp.Diff(upstream, ours); diff != "" {
		t.Errorf("upstream struct sizes changed (-upstream +ours):\n%s", diff)
	}
	// bpf2go's generated types come from the same BTF; keep them in step.
	gen := map[string]uintptr{
		"dest":   unsafe.Sizeof(redirectGpaDestinationEntry{}),
		"akey":   unsafe.Sizeof(redirectGpaAuditKey{}),
		"aevent": unsafe.Sizeof(redirectGpaAuditEvent{}),
		"caller": unsafe.Sizeof(redirectGpaCallerRecord{}),
		"ckey":   unsafe.Sizeof(redirectGpaCallerKey{}),
	}
	wantGen := map[string]uintptr{"dest": destinationEntrySize, "akey": auditKeySize, "aevent": auditEventSize,
		"caller": callerRecordSize, "ckey": callerKeySize}
	if diff := cmp.Diff(wantGen, gen); diff != "" {
		t.Errorf("generated struct sizes (-want +got):\n%s", diff)
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
			got := marshalDestination(tt.ap)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("marshalDestination(%v) (-want +got):\n%s", tt.ap, diff)
			}
			back, ok := unmarshalDestination(got)
			if !ok || back != tt.ap {
				t.Errorf("round trip = %v, %v; want %v", back, ok, tt.ap)
			}
		})
	}
	// The native u32 words match the constants upstream documents.
	wire := marshalDestination(netip.MustParseAddrPort("168.63.129.16:80"))
	imds := marshalDestination(netip.MustParseAddrPort("169.254.169.254:80"))
	words := []uint32{ne.Uint32(wire[0:]), ne.Uint32(imds[0:]), ne.Uint32(wire[16:])}
	if diff := cmp.Diff([]uint32{0x10813FA8, 0xFEA9FEA9, 0x5000}, words); diff != "" {
		t.Errorf("native words (-want +got):\n%s", diff)
	}
}

func TestAuditKeyBytes(t *testing.T) {
	// The port is in host order, unlike the destination port.
	got := marshalAuditKey(0xC350) // 50000
	want := []byte{6, 0, 0, 0, 0x50, 0xC3, 0, 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("marshalAuditKey (-want +got):\n%s", diff)
	}
}

func TestCallerKeyBytes(t *testing.T) {
	got := marshalCallerKey(netip.MustParseAddrPort("127.0.0.1:50000"))
	want := []byte{6, 0, 0, 0, 0x50, 0xC3, 0, 0, 127, 0, 0, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("marshalCallerKey (-want +got):\n%s", diff)
	}
}

func TestUnmarshalCallerRecord(t *testing.T) {
	b := make([]byte, callerRecordSize)
	ne.PutUint64(b[0:], 0x1122334455)
	ne.PutUint32(b[8:], 1000)
	ne.PutUint32(b[12:], 1001)
	ne.PutUint32(b[16:], 4242)
	copy(b[20:24], []byte{169, 254, 169, 254})
	ne.PutUint32(b[24:], portWord(80))
	ne.PutUint32(b[28:], ipprotoTCP)
	copy(b[32:], "curl")
	got, err := ParseCallerRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	want := AuditRecord{PID: 4242, UID: 1000, GID: 1001, Comm: "curl", CgroupID: 0x1122334455,
		OriginalDst: netip.MustParseAddrPort("169.254.169.254:80")}
	if diff := cmp.Diff(want, got, netipEqual); diff != "" {
		t.Errorf("ParseCallerRecord (-want +got):\n%s", diff)
	}

	// A full 16-byte comm has no terminator and must not be cut short.
	copy(b[32:], "0123456789abcdef")
	got, err = ParseCallerRecord(b)
	if err != nil || got.Comm != "0123456789abcdef" {
		t.Errorf("comm without NUL = %q, %v", got.Comm, err)
	}
	if _, err := ParseCallerRecord(b[:47]); err == nil {
		t.Error("short record accepted")
	}
}

func TestUnmarshalDestinationRejectsForeignForms(t *testing.T) {
	good := marshalDestination(netip.MustParseAddrPort("10.0.0.1:443"))
	tests := []struct {
		name   string
		mutate func([]byte)
	}{
		{"ipv6 word", func(b []byte) { b[4] = 1 }},
		{"udp", func(b []byte) { ne.PutUint32(b[20:], 17) }},
		{"port high bits", func(b []byte) { ne.PutUint32(b[16:], 0x10000|ne.Uint32(b[16:])) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			tt.mutate(b)
			if ap, ok := unmarshalDestination(b); ok {
				t.Errorf("accepted %v", ap)
			}
		})
	}
	if _, ok := unmarshalDestination(good[:23]); ok {
		t.Error("accepted short entry")
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
