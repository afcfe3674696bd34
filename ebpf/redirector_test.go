//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/metadatasec/gpa/ebpf/hostcheck"
	"github.com/metadatasec/gpa/msp"
)

func mustLoad(t testing.TB, opts Options) *Redirector {
	t.Helper()
	r, err := Load(t.Context(), opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// attachedPrograms lists the program IDs attached directly to cg, per
// attach type the redirector uses.
func attachedPrograms(t testing.TB, cg *testCgroup) map[ebpf.AttachType][]ebpf.ProgramID {
	t.Helper()
	out := map[ebpf.AttachType][]ebpf.ProgramID{}
	for _, a := range new(redirectObjects).attachments() {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.fd.Fd()), Attach: a.attach})
		if err != nil {
			t.Fatalf("query %v: %v", a.attach, err)
		}
		for _, p := range res.Programs {
			out[a.attach] = append(out[a.attach], p.ID)
		}
	}
	return out
}

func countAttached(m map[ebpf.AttachType][]ebpf.ProgramID) int {
	n := 0
	for _, ids := range m {
		n += len(ids)
	}
	return n
}

const landTimeout = 5 * time.Second

// expectLanding checks where the helper's connection arrived and returns the
// accepted connection's client address.
func expectLanding(t *testing.T, want, notWant *listener, res dialResult) netip.AddrPort {
	t.Helper()
	if res.Err != "" {
		t.Fatalf("helper: %s", res.Err)
	}
	c := want.accepted(landTimeout)
	if c == nil {
		t.Fatalf("no connection reached %v", want.addr)
	}
	defer c.Close()
	if c := notWant.accepted(50 * time.Millisecond); c != nil {
		c.Close()
		t.Errorf("a connection also reached %v", notWant.addr)
	}
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	local := netip.MustParseAddrPort(res.Local)
	if remote.Port() != local.Port() {
		t.Errorf("accepted connection from port %d, helper's socket is on port %d", remote.Port(), local.Port())
	}
	return remote
}

type exemptHow int

const (
	exemptNone exemptHow = iota
	exemptExact
	exemptOtherStart
)

// putExemption writes e into the exemption map as ExemptSelf would for
// another process, and removes it when the test ends.
func putExemption(t testing.TB, r *Redirector, e Exemption) {
	t.Helper()
	m := r.objs.GpaExemptMap
	key := redirectGpaExemptKey{Tgid: e.PID}
	if err := m.Update(&key, &redirectGpaExemption{StartTicks: e.StartTicks}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Delete(&key) })
}

func TestRedirect(t *testing.T) {
	cg := newTestCgroup(t)
	r := mustLoad(t, Options{CgroupPath: cg.path})

	protected := listen(t, "127.0.0.77:0") // stands in for a host endpoint
	other := listen(t, "127.0.0.78:0")     // a destination nobody protects
	proxy := listen(t, "127.0.0.1:0")
	if err := r.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	exe := exeFor(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	mapped := netip.AddrPortFrom(netip.AddrFrom16(protected.addr.Addr().As16()), protected.addr.Port())

	tests := []struct {
		name      string
		cgroup    *testCgroup
		cred      *syscall.Credential
		exempt    exemptHow
		family    string
		dst       netip.AddrPort
		wantProxy bool
		wantPeer  netip.AddrPort
	}{
		{name: "protected as root", cgroup: cg, family: "4", dst: protected.addr, wantProxy: true, wantPeer: protected.addr},
		{name: "protected as uid 65534", cgroup: cg, cred: nobody, family: "4", dst: protected.addr, wantProxy: true, wantPeer: protected.addr},
		{name: "protected via AF_INET6 v4-mapped", cgroup: cg, family: "6", dst: mapped, wantProxy: true, wantPeer: mapped},
		{name: "protected via AF_INET6 as uid 65534", cgroup: cg, cred: nobody, family: "6", dst: mapped, wantProxy: true, wantPeer: mapped},
		{name: "protected via TCP Fast Open", cgroup: cg, family: "4tfo", dst: protected.addr, wantProxy: true, wantPeer: protected.addr},
		{name: "protected via TCP Fast Open on AF_INET6", cgroup: cg, family: "6tfo", dst: mapped, wantProxy: true, wantPeer: mapped},
		{name: "not protected", cgroup: cg, family: "4", dst: other.addr, wantPeer: other.addr},
		{name: "not protected AF_INET6", cgroup: cg, family: "6", dst: netip.AddrPortFrom(netip.AddrFrom16(other.addr.Addr().As16()), other.addr.Port()),
			wantPeer: netip.AddrPortFrom(netip.AddrFrom16(other.addr.Addr().As16()), other.addr.Port())},
		{name: "exempt process", cgroup: cg, exempt: exemptExact, family: "4", dst: protected.addr, wantPeer: protected.addr},
		{name: "exempt process via AF_INET6", cgroup: cg, exempt: exemptExact, family: "6", dst: mapped, wantPeer: mapped},
		// The pid alone is not enough: a process started at another
		// time holding an exempt pid is redirected.
		{name: "exempt pid, other start time", cgroup: cg, exempt: exemptOtherStart, family: "4", dst: protected.addr, wantProxy: true, wantPeer: protected.addr},
		{name: "process outside the cgroup", cgroup: nil, family: "4", dst: protected.addr, wantPeer: protected.addr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHelper(t, helperOpts{mode: "dial", cgroup: tt.cgroup, cred: tt.cred, exe: exe})
			if tt.exempt != exemptNone {
				start, err := processStart("/proc", int(h.pid))
				if err != nil {
					t.Fatal(err)
				}
				if tt.exempt == exemptOtherStart {
					start--
				}
				putExemption(t, r, Exemption{PID: h.pid, StartTicks: start})
			}
			res := h.dial(t, tt.family, tt.dst)
			if res.Err != "" {
				t.Fatalf("helper: %s", res.Err)
			}
			if res.Peer != tt.wantPeer.String() {
				t.Errorf("getpeername() = %s, want %s", res.Peer, tt.wantPeer)
			}

			landed := protected
			if !tt.wantProxy && tt.dst.Addr().Unmap() == other.addr.Addr() {
				landed = other
			}
			if !tt.wantProxy {
				client := expectLanding(t, landed, proxy, res)
				if _, err := r.Audit().LookupAndDelete(client); !errors.Is(err, ErrNotFound) {
					t.Errorf("audit lookup for an unredirected connection = %v, want ErrNotFound", err)
				}
				return
			}

			client := expectLanding(t, proxy, protected, res)
			port := client.Port()
			uid, gid := uint32(0), uint32(0)
			if tt.cred != nil {
				uid, gid = tt.cred.Uid, tt.cred.Gid
			}
			// Upstream's reduced record is there too, for its tools.
			var ev redirectGpaAuditEvent
			akey := auditKey(port)
			if err := r.objs.AuditMap.Lookup(&akey, &ev); err != nil {
				t.Fatalf("audit_map entry: %v", err)
			}
			isRoot := uint32(0)
			if uid == 0 {
				isRoot = 1
			}
			wantEv := []uint32{uid, h.pid, isRoot, ip4Word(protected.addr.Addr()), portWord(protected.addr.Port())}
			gotEv := []uint32{ev.LogonId, ev.ProcessId, ev.IsRoot, ev.DestinationIpv4, ev.DestinationPort}
			if diff := cmp.Diff(wantEv, gotEv); diff != "" {
				t.Errorf("audit_map value (-want +got):\n%s", diff)
			}

			// Someone else's address with the caller's port gets
			// nothing, and does not consume the record.
			spoof := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port)
			if _, err := r.Audit().LookupAndDelete(spoof); !errors.Is(err, ErrNotFound) {
				t.Errorf("LookupAndDelete(%v) = %v, want ErrNotFound", spoof, err)
			}
			got, err := r.Audit().LookupAndDelete(client)
			if err != nil {
				t.Fatalf("LookupAndDelete(%v): %v", client, err)
			}
			got = withoutGeneration(t, got, h.pid)
			want := msp.ConnectRecord{PID: h.pid, UID: uid, GID: gid, Comm: "gpa-ebpf-helper", CgroupID: cg.id, OriginalDst: protected.addr}
			if diff := cmp.Diff(want, got, netipEqual); diff != "" {
				t.Errorf("audit record (-want +got):\n%s", diff)
			}
			if _, err := r.Audit().LookupAndDelete(client); !errors.Is(err, ErrNotFound) {
				t.Errorf("second LookupAndDelete = %v, want ErrNotFound", err)
			}
			// The reaper removes upstream's copy within reapDelay;
			// flush now rather than wait.
			r.audit.reap.flush()
			if err := r.objs.AuditMap.Lookup(&akey, &ev); !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Errorf("audit_map entry after LookupAndDelete: %v, want gone", err)
			}
		})
	}

	t.Run("test process itself", func(t *testing.T) {
		c, err := net.Dial("tcp4", protected.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectLanding(t, protected, proxy, dialResult{Local: c.LocalAddr().String()})
	})
}

func TestPolicyUpdatesApplyToNextConnect(t *testing.T) {
	cg := newTestCgroup(t)
	r := mustLoad(t, Options{CgroupPath: cg.path})
	protected := listen(t, "127.0.0.77:0")
	proxy := listen(t, "127.0.0.1:0")
	proxy2 := listen(t, "127.0.0.1:0")
	h := startHelper(t, helperOpts{mode: "dial", cgroup: cg})

	if list, err := r.Policy().List(); err != nil || len(list) != 0 {
		t.Fatalf("fresh policy = %v, %v; want empty", list, err)
	}
	expectLanding(t, protected, proxy, h.dial(t, "4", protected.addr))

	if err := r.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	expectLanding(t, proxy, protected, h.dial(t, "4", protected.addr))

	if err := r.Policy().Set(protected.addr, proxy2.addr); err != nil {
		t.Fatal(err)
	}
	expectLanding(t, proxy2, proxy, h.dial(t, "4", protected.addr))
	list, err := r.Policy().List()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]PolicyEntry{{Dst: protected.addr, Proxy: proxy2.addr}}, list, netipEqual); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	if err := r.Policy().Delete(protected.addr); err != nil {
		t.Fatal(err)
	}
	expectLanding(t, protected, proxy2, h.dial(t, "4", protected.addr))
	if err := r.Policy().Delete(protected.addr); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	var me *MapError
	if err := r.Policy().Delete(protected.addr); !errors.As(err, &me) || !strings.HasPrefix(err.Error(), "Failed to delete element '127.0.0.77:") {
		t.Errorf("Delete error = %v", err)
	}
}

func TestPolicyMapOperations(t *testing.T) {
	cg := newTestCgroup(t)
	r := mustLoad(t, Options{CgroupPath: cg.path})

	entries := []PolicyEntry{
		{netip.MustParseAddrPort("169.254.169.254:80"), netip.MustParseAddrPort("127.0.0.1:3080")},
		{netip.MustParseAddrPort("168.63.129.16:32526"), netip.MustParseAddrPort("127.0.0.1:3080")},
		{netip.MustParseAddrPort("168.63.129.16:80"), netip.MustParseAddrPort("127.0.0.1:3080")},
	}
	for _, e := range entries {
		if err := r.Policy().Set(e.Dst, e.Proxy); err != nil {
			t.Fatal(err)
		}
	}
	// A v4-mapped destination is the same key as its IPv4 form.
	if err := r.Policy().Set(netip.MustParseAddrPort("[::ffff:169.254.169.254]:80"), netip.MustParseAddrPort("127.0.0.1:3080")); err != nil {
		t.Fatal(err)
	}
	got, err := r.Policy().List()
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(entries)
	slices.SortFunc(want, func(a, b PolicyEntry) int { return a.Dst.Compare(b.Dst) })
	if diff := cmp.Diff(want, got, netipEqual); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if err := r.Policy().Set(netip.MustParseAddrPort("[2001:db8::1]:80"), netip.MustParseAddrPort("127.0.0.1:3080")); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("IPv6 destination: %v, want ErrInvalidAddress", err)
	}
}

func TestSetRedirect(t *testing.T) {
	cg := newTestCgroup(t)
	custom := netip.MustParseAddrPort("127.0.0.9:4000")
	tests := []struct {
		name  string
		proxy netip.AddrPort // Options.Proxy
		want  netip.AddrPort
	}{
		{"default proxy", netip.AddrPort{}, msp.ProxyAddr},
		{"proxy from Options", custom, custom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoad(t, Options{CgroupPath: cg.path, Proxy: tt.proxy})
			p := r.Policy()
			steps := [][]msp.Endpoint{
				{msp.EndpointWireServer, msp.EndpointIMDS, msp.EndpointHostGA},
				{msp.EndpointIMDS},
				{msp.EndpointHostGA, msp.EndpointWireServer},
				nil,
			}
			for _, eps := range steps {
				if err := p.SetRedirect(t.Context(), eps); err != nil {
					t.Fatalf("SetRedirect(%v): %v", eps, err)
				}
				want := []PolicyEntry{}
				for _, ep := range eps {
					want = append(want, PolicyEntry{Dst: ep.AddrPort(), Proxy: tt.want})
				}
				slices.SortFunc(want, func(a, b PolicyEntry) int { return a.Dst.Compare(b.Dst) })
				got, err := p.List()
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got, netipEqual, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("after SetRedirect(%v) (-want +got):\n%s", eps, diff)
				}
			}
		})
	}
}

func TestCloseDetaches(t *testing.T) {
	cg := newTestCgroup(t)
	r, err := Load(t.Context(), Options{CgroupPath: cg.path})
	if err != nil {
		t.Fatal(err)
	}
	if n := countAttached(attachedPrograms(t, cg)); n != len(linkNames) {
		t.Fatalf("%d programs attached after Load, want %d", n, len(linkNames))
	}
	protected := listen(t, "127.0.0.77:0")
	proxy := listen(t, "127.0.0.1:0")
	if err := r.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := attachedPrograms(t, cg); countAttached(got) != 0 {
		t.Errorf("programs still attached after Close: %v", got)
	}
	h := startHelper(t, helperOpts{mode: "dial", cgroup: cg})
	expectLanding(t, protected, proxy, h.dial(t, "4", protected.addr))
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLoadCloseNoLeaks(t *testing.T) {
	cg := newTestCgroup(t)
	const rounds = 100
	var (
		progIDs []ebpf.ProgramID
		mapIDs  []ebpf.MapID
		linkIDs []link.ID
	)
	// Warm up once so lazily opened descriptors (feature probes, BTF) are
	// not counted as leaks.
	r, err := Load(t.Context(), Options{CgroupPath: cg.path})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	before := openFDs(t)

	for range rounds {
		r, err := Load(t.Context(), Options{CgroupPath: cg.path})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range r.objs.attachments() {
			info, err := a.prog.Info()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := info.ID()
			progIDs = append(progIDs, id)
		}
		o := &r.objs
		for _, m := range []*ebpf.Map{o.PolicyMap, o.GpaExemptMap, o.AuditMap, o.GpaSkStorage, o.GpaCallerMap} {
			info, err := m.Info()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := info.ID()
			mapIDs = append(mapIDs, id)
		}
		for _, l := range r.links {
			info, err := l.Info()
			if err != nil {
				t.Fatal(err)
			}
			linkIDs = append(linkIDs, info.ID)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}

	if after := openFDs(t); after != before {
		t.Errorf("open file descriptors: %d before, %d after %d Load/Close rounds", before, after, rounds)
	}
	if got := attachedPrograms(t, cg); countAttached(got) != 0 {
		t.Errorf("programs still attached: %v", got)
	}
	if len(progIDs) != rounds*len(linkNames) || len(mapIDs) != rounds*len(mapNames) || len(linkIDs) != rounds*len(linkNames) {
		t.Fatalf("collected %d programs, %d maps, %d links", len(progIDs), len(mapIDs), len(linkIDs))
	}
	// The kernel may release objects a moment after the last reference
	// goes (deferred work), so poll briefly.
	deadline := time.Now().Add(3 * time.Second)
	for {
		alive := liveObjects(progIDs, mapIDs, linkIDs)
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kernel objects still alive after Close: %v", alive)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func liveObjects(progs []ebpf.ProgramID, maps []ebpf.MapID, links []link.ID) []string {
	var alive []string
	for _, id := range progs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			alive = append(alive, "program "+strconv.FormatUint(uint64(id), 10))
		}
	}
	for _, id := range maps {
		if m, err := ebpf.NewMapFromID(id); err == nil {
			m.Close()
			alive = append(alive, "map "+strconv.FormatUint(uint64(id), 10))
		}
	}
	for _, id := range links {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			alive = append(alive, "link "+strconv.FormatUint(uint64(id), 10))
		}
	}
	return alive
}

// cgroupV1Dir returns a cgroup v1 directory if the machine has one (hybrid
// layout), else a plain directory: both must be refused the same way.
func cgroupV1Dir(t *testing.T) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		left, right, ok := strings.Cut(line, " - ")
		if ok && strings.HasPrefix(right, "cgroup ") {
			if f := strings.Fields(left); len(f) >= 5 {
				return hostcheck.UnescapeMountinfo(f[4])
			}
		}
	}
	t.Log("no cgroup v1 mount here; using a plain directory")
	return t.TempDir()
}

func TestLoadErrors(t *testing.T) {
	cg := newTestCgroup(t)

	// badProgram makes connect4 something the verifier rejects: it reads
	// a register that was never written.
	badProgram := func(s *ebpf.CollectionSpec) {
		s.Programs[redirectProgConnect4].Instructions = asm.Instructions{
			asm.Mov.Reg(asm.R0, asm.R5),
			asm.Return(),
		}
	}
	// wrongAttachType loads connect4 for the bind4 hook, so the kernel
	// refuses to attach it as connect4.
	wrongAttachType := func(s *ebpf.CollectionSpec) {
		p := s.Programs[redirectProgConnect4]
		p.AttachType = ebpf.AttachCGroupInet4Bind
		p.Instructions = asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}
	}
	noSockAddr := func(h *host) {
		h.haveProgramType = func(pt ebpf.ProgramType) error {
			if pt == ebpf.CGroupSockAddr {
				return ebpf.ErrNotSupported
			}
			return nil
		}
	}
	oldKernel := func(h *host) {
		h.root = fstest.MapFS{"proc/sys/kernel/osrelease": {Data: []byte("5.10.0-28-cloud-amd64\n")}}
	}

	tests := []struct {
		name       string
		path       string
		editHost   func(*host)
		editSpec   func(*ebpf.CollectionSpec)
		wantIs     error
		wantAs     any
		wantPrefix string
	}{
		{name: "missing cgroup path", path: filepath.Join(cg.path, "does-not-exist"),
			wantIs: os.ErrNotExist, wantAs: new(*CgroupError), wantPrefix: "Failed to open cgroup '"},
		{name: "cgroup v1 path", path: cgroupV1Dir(t),
			wantIs: ErrNoCgroup2, wantAs: new(*CgroupError), wantPrefix: "Failed to open cgroup '"},
		{name: "empty path", path: "", wantAs: new(*CgroupError), wantPrefix: "Failed to open cgroup ''"},
		{name: "unsupported program type", path: cg.path, editHost: noSockAddr,
			wantIs: ErrNotSupported, wantAs: new(*RequirementError)},
		{name: "kernel too old", path: cg.path, editHost: oldKernel,
			wantIs: ErrKernelTooOld, wantAs: new(*RequirementError)},
		{name: "verifier rejects connect4", path: cg.path, editSpec: badProgram,
			wantAs: new(*ProgramError), wantPrefix: "Failed to load program 'connect4' with error: "},
		{name: "attach connect4 fails", path: cg.path, editSpec: wrongAttachType,
			wantAs: new(*ProgramError), wantPrefix: "Failed to attach program 'connect4' with error: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := realHost()
			if tt.editHost != nil {
				tt.editHost(h)
			}
			h.editSpec = tt.editSpec
			fdsBefore := openFDs(t)
			r, err := Load(t.Context(), Options{CgroupPath: tt.path, host: h})
			if err == nil {
				r.Close()
				t.Fatal("Load succeeded")
			}
			t.Logf("Load error: %v", err)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if !errors.As(err, tt.wantAs) {
				t.Errorf("error %T (%v) is not %T", err, err, tt.wantAs)
			}
			if !strings.HasPrefix(err.Error(), tt.wantPrefix) {
				t.Errorf("error %q lacks prefix %q", err, tt.wantPrefix)
			}
			if tt.editSpec != nil {
				var pe *ProgramError
				if errors.As(err, &pe) && pe.Op == OpLoad {
					if len(pe.VerifierLog) == 0 || !strings.Contains(err.Error(), "Verifier log:\n") || !strings.Contains(err.Error(), "R5 !read_ok") {
						t.Errorf("load error carries no verifier log: %q", err)
					}
				}
			}
			if got := attachedPrograms(t, cg); countAttached(got) != 0 {
				t.Errorf("programs left attached after failed Load: %v", got)
			}
			if after := openFDs(t); after != fdsBefore {
				t.Errorf("failed Load leaked descriptors: %d before, %d after", fdsBefore, after)
			}
		})
	}
}

// mountBPFFS mounts a private bpffs for pinning tests.
func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	return filepath.Join(dir, "gpa")
}

func TestPinnedRestartKeepsRedirecting(t *testing.T) {
	cg := newTestCgroup(t)
	pin := mountBPFFS(t)
	protected := listen(t, "127.0.0.77:0")
	proxy := listen(t, "127.0.0.1:0")

	r1, err := Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemovePins(pin) })
	if err := r1.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	first := attachedPrograms(t, cg)
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	// The agent is "down": programs and policy stay in force.
	if got := attachedPrograms(t, cg); !cmp.Equal(first, got) {
		t.Errorf("attached programs changed when the pinned Redirector closed: %v -> %v", first, got)
	}
	h := startHelper(t, helperOpts{mode: "dial", cgroup: cg})
	expectLanding(t, proxy, protected, h.dial(t, "4", protected.addr))

	// Restart: same links, new programs, same maps (and their records).
	r2, err := Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	second := attachedPrograms(t, cg)
	if countAttached(second) != len(linkNames) {
		t.Fatalf("after restart %d programs attached, want %d: %v", countAttached(second), len(linkNames), second)
	}
	for at, ids := range second {
		if slices.Equal(ids, first[at]) {
			t.Errorf("%v: program not replaced on restart (%v)", at, ids)
		}
	}
	list, err := r2.Policy().List()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]PolicyEntry{{Dst: protected.addr, Proxy: proxy.addr}}, list, netipEqual); diff != "" {
		t.Errorf("policy after restart (-want +got):\n%s", diff)
	}
	client := expectLanding(t, proxy, protected, h.dial(t, "4", protected.addr))
	if rec, err := r2.Audit().LookupAndDelete(client); err != nil || rec.PID != h.pid {
		t.Errorf("audit after restart = %+v, %v; want pid %d", rec, err, h.pid)
	}

	r2.Close()
	if err := RemovePins(pin); err != nil {
		t.Fatal(err)
	}
	if got := attachedPrograms(t, cg); countAttached(got) != 0 {
		t.Errorf("programs attached after RemovePins: %v", got)
	}
	ents, _ := os.ReadDir(pin)
	if len(ents) != 0 {
		t.Errorf("pins left after RemovePins: %v", ents)
	}
}

// An older version's caller maps (another layout) are replaced on
// takeover, with the programs swapped into the pinned links and the policy
// kept, so an upgrade does not leave the old programs redirecting to a
// proxy that cannot load.
func TestPinnedCallerMapsOfAnotherLayoutAreReplaced(t *testing.T) {
	cg := newTestCgroup(t)
	pin := mountBPFFS(t)
	t.Cleanup(func() { RemovePins(pin) })
	protected := listen(t, "127.0.0.77:0")
	proxy := listen(t, "127.0.0.1:0")

	old := realHost()
	old.editSpec = func(s *ebpf.CollectionSpec) { s.Maps[redirectMapGpaCallerMap].MaxEntries /= 2 }
	r, err := Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin, host: old})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	r.Close()

	r, err = Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin})
	if err != nil {
		t.Fatalf("Load over an older version's caller map: %v", err)
	}
	defer r.Close()
	if n := countAttached(attachedPrograms(t, cg)); n != len(linkNames) {
		t.Errorf("%d programs attached, want %d", n, len(linkNames))
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(pin, "maps", redirectMapGpaCallerMap), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	spec, err := loadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Maps[redirectMapGpaCallerMap].Compatible(m); err != nil {
		t.Errorf("pinned caller map is not this version's: %v", err)
	}
	h := startHelper(t, helperOpts{mode: "dial", cgroup: cg})
	client := expectLanding(t, proxy, protected, h.dial(t, "4", protected.addr))
	if rec, err := r.Audit().LookupAndDelete(client); err != nil || rec.PID != h.pid {
		t.Errorf("audit after the upgrade = %+v, %v; want pid %d", rec, err, h.pid)
	}
}

func TestPinnedLinksForAnotherCgroupAreReplaced(t *testing.T) {
	cgA := newTestCgroup(t)
	cgB := newTestCgroup(t)
	pin := mountBPFFS(t)
	t.Cleanup(func() { RemovePins(pin) })

	r, err := Load(t.Context(), Options{CgroupPath: cgA.path, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r, err = Load(t.Context(), Options{CgroupPath: cgB.path, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if n := countAttached(attachedPrograms(t, cgA)); n != 0 {
		t.Errorf("%d programs still attached to the old cgroup", n)
	}
	if n := countAttached(attachedPrograms(t, cgB)); n != len(linkNames) {
		t.Errorf("%d programs attached to the new cgroup, want %d", n, len(linkNames))
	}
	if err := RemovePins(pin); err != nil {
		t.Fatal(err)
	}
	if n := countAttached(attachedPrograms(t, cgB)); n != 0 {
		t.Errorf("%d programs attached after RemovePins", n)
	}
}

func TestPinPathNotOnBPFFS(t *testing.T) {
	cg := newTestCgroup(t)
	pin := filepath.Join(t.TempDir(), "gpa")
	r, err := Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin})
	if err == nil {
		r.Close()
		t.Fatal("Load pinned to a non-bpffs directory")
	}
	t.Logf("Load error: %v", err)
	var me *MapError
	if !errors.As(err, &me) || me.Op != "create" {
		t.Errorf("error %T %v, want *MapError from create", err, err)
	}
	if got := attachedPrograms(t, cg); countAttached(got) != 0 {
		t.Errorf("programs attached after failed Load: %v", got)
	}
}

func TestPinnedMapsOfAnotherLayoutAreRefused(t *testing.T) {
	cg := newTestCgroup(t)
	pin := mountBPFFS(t)
	t.Cleanup(func() { RemovePins(pin) })

	r, err := Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	// A "newer version" whose policy_map is larger: the policy is not
	// something to drop.
	h := realHost()
	h.editSpec = func(s *ebpf.CollectionSpec) { s.Maps[redirectMapPolicyMap].MaxEntries *= 2 }
	_, err = Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin, host: h})
	if !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Fatalf("Load over incompatible pins = %v, want ErrMapIncompatible", err)
	}
	// The old programs keep redirecting until the pins are removed.
	if n := countAttached(attachedPrograms(t, cg)); n != len(linkNames) {
		t.Errorf("%d programs attached after the refused Load, want %d", n, len(linkNames))
	}
	if err := RemovePins(pin); err != nil {
		t.Fatal(err)
	}
	r, err = Load(t.Context(), Options{CgroupPath: cg.path, PinPath: pin, host: h})
	if err != nil {
		t.Fatalf("Load after RemovePins: %v", err)
	}
	r.Close()
}
