package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/proxy"
	"github.com/metadatasec/gpa/status"
	"github.com/prometheus/client_golang/prometheus"
)

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  agent.Config
		opts *agent.Options
		want string
	}{
		{"no key folder", agent.Config{}, nil, "KeyFolder is required"},
		{"relative key folder", agent.Config{KeyFolder: "keys"}, nil, "not absolute"},
		{"listener not on loopback", agent.Config{KeyFolder: "/k", ListenAddr: netip.MustParseAddrPort("10.0.0.1:3080")}, nil, "not a loopback"},
		{"listener without a port", agent.Config{KeyFolder: "/k", ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")}, nil, "has no port"},
		{"override without address", agent.Config{KeyFolder: "/k", Endpoints: map[msp.Endpoint]netip.AddrPort{msp.EndpointIMDS: {}}}, nil, "override for imds"},
		{"metrics served from a registerer that cannot gather", agent.Config{KeyFolder: "/k", MetricsAddr: "127.0.0.1:0"},
			&agent.Options{Metrics: registererOnly{prometheus.NewRegistry()}}, "not a prometheus.Gatherer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := agent.New(tt.cfg, tt.opts)
			if !errors.Is(err, agent.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrConfig saying %q", err, tt.want)
			}
		})
	}
	if _, err := agent.New(agent.Config{KeyFolder: "/k"}, nil); err != nil {
		t.Errorf("the least config: %v", err)
	}
}

type registererOnly struct{ prometheus.Registerer }

// imdsHost is a simulated host on loopback whose IMDS allows everyone in
// mode.
func imdsHost(t *testing.T, mode msp.Mode) *msptest.Host {
	t.Helper()
	host := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: mode, DefaultAccess: msp.AccessAllow, ID: "imds-rules"}}})
	t.Cleanup(host.Close)
	return host
}

// freeLoopback returns a loopback address no one listened on a moment ago,
// for an agent's listener.
func freeLoopback(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestRunWithoutRedirect runs the agent without eBPF against a simulated
// host on loopback: it provisions, writes status.json and its logs, feeds
// the hooks, and on cancel stops and says so in status.json.
func TestRunWithoutRedirect(t *testing.T) {
	testenv.MustBeRoot(t) // the key store insists on a root-owned folder
	host := imdsHost(t, msp.ModeEnforce)
	dir := t.TempDir()
	listen := freeLoopback(t)
	var (
		logs, auditLines testenv.Buffer
		mu               sync.Mutex
		audited          []string
		snaps            = make(chan *keylatch.Snapshot, 64)
		ready            = make(chan netip.AddrPort, 1)
	)
	reg := prometheus.NewRegistry()
	a, err := agent.New(agent.Config{
		ListenAddr: listen, KeyFolder: filepath.Join(dir, "keys"), LogFolder: filepath.Join(dir, "log"),
		PollInterval: 100 * time.Millisecond, NoRedirect: true, ProvisionTimeout: time.Second, Version: "9.9.9",
		Endpoints: map[msp.Endpoint]netip.AddrPort{msp.EndpointWireServer: host.WireServerAddr()},
	}, &agent.Options{
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		AuditLog: &auditLines,
		OnAudit: func(r *msp.AuditRecord) {
			mu.Lock()
			audited = append(audited, r.URL)
			mu.Unlock()
		},
		Metrics: reg,
		OnSnapshot: func(s *keylatch.Snapshot) {
			select { // the hook must not block the agent
			case snaps <- s:
			default:
			}
		},
		Ready: func(a netip.AddrPort) { ready <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case got := <-ready:
		if got != listen {
			t.Errorf("Ready(%v), want %v", got, listen)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never ready")
	}
	for deadline, latched := time.After(10*time.Second), false; !latched; {
		select {
		case s := <-snaps:
			latched = s.Key.Valid()
		case <-deadline:
			t.Fatal("no key latched")
		}
	}
	// Without eBPF no caller can be attributed: upstream answers 421.
	c, err := net.Dial("tcp", listen.String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n")
	resp, _ := io.ReadAll(c)
	c.Close()
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 421")) {
		t.Errorf("answer %.60q, want 421", resp)
	}
	// Provisioning ends with the redirector's failure: --status says why.
	res, err := status.WaitProvisioned(ctx, &status.WaitOptions{Addr: listen.String(), Wait: 10 * time.Second, Start: time.Now()})
	if err != nil || res.ExitCode() != 2 || !strings.Contains(res.Report(), "eBPF disabled by the caller") {
		t.Errorf("--status: exit %d %q (%v)", res.ExitCode(), res.Report(), err)
	}
	if n := counterSum(t, reg, "gpa_proxy_requests_total"); n < 1 {
		t.Errorf("gpa_proxy_requests_total = %v", n)
	}
	mu.Lock()
	if len(audited) == 0 || audited[0] != "/metadata/instance" {
		t.Errorf("OnAudit saw %q", audited)
	}
	mu.Unlock()
	if !strings.Contains(auditLines.String(), `"url":"/metadata/instance"`) {
		t.Errorf("AuditLog got %q", auditLines.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil // for the deferred receive
	b, err := os.ReadFile(filepath.Join(dir, "log", agent.StatusFileName))
	if err != nil || !bytes.Contains(b, []byte(`"version": "9.9.9"`)) || !bytes.Contains(b, []byte("proxy listener stopped")) {
		t.Errorf("final status.json (%v):\n%s", err, b)
	}
	for _, f := range []string{agent.AgentLogName, agent.ConnectionLogName} {
		if b, err := os.ReadFile(filepath.Join(dir, "log", f)); err != nil || len(b) == 0 {
			t.Errorf("%s: %v, %d bytes", f, err, len(b))
		}
	}
	if !strings.Contains(logs.String(), "GuestProxyAgent (9.9.9) is starting") {
		t.Errorf("the logger did not get the start line:\n%.2000s", logs.String())
	}
	if err := a.Run(context.Background()); !errors.Is(err, agent.ErrAlreadyRun) {
		t.Errorf("second Run: %v", err)
	}
}

// counterSum sums the series of the named counter family.
func counterSum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestCustomAgentExample runs Example_customAgent, as godoc shows it, in a
// network namespace of its own with a simulated host on the metadata
// addresses and its eBPF programs on a child cgroup: a caller in that
// cgroup reaches IMDS through it, the example's audit sink and registry
// see the request, and Ctrl-C stops it with the programs detached.
func TestCustomAgentExample(t *testing.T) {
	if !testenv.InNetns(t) {
		return
	}
	curl, err := exec.LookPath("curl")
	testenv.Require(t, "curl", err)
	ls, err := msptest.ListenMetadata()
	if err != nil {
		t.Fatal(err)
	}
	host := msptest.NewHost(&msptest.Options{Listeners: ls, Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "imds-rules"}}})
	defer host.Close()
	root, err := ebpf.CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	cg, err := os.MkdirTemp(root, "gpa-agent-example-")
	if err != nil {
		testenv.SkipOrFail(t, "cannot create a child cgroup: %v", err)
	}
	defer os.Remove(cg)
	t.Setenv("MY_AGENT_DIR", t.TempDir())
	t.Setenv("MY_AGENT_CGROUP", cg)

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Example_customAgent()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := status.WaitProvisioned(ctx, &status.WaitOptions{Addr: msp.ProxyAddr.String(), Wait: 20 * time.Second, Start: time.Now()})
	if err != nil || res.ExitCode() != 0 {
		t.Fatalf("provisioning: exit %d %q (%v)", res.ExitCode(), res.Report(), err)
	}
	fd, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := exec.CommandContext(ctx, curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Metadata: true",
		"http://169.254.169.254/metadata/instance?api-version=2021-02-01")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	code, err := cmd.Output()
	if err != nil || string(code) != "200" {
		t.Errorf("curl in the agent's cgroup: %q (%v)", code, err)
	}
	if seen := host.RequestsTo("GET", "/metadata/instance"); len(seen) != 1 || !seen[0].SignatureValid {
		t.Errorf("the host saw %+v, want one signed request", seen)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the example did not stop on SIGINT")
	}
	w.Close()
	got := <-out
	for _, want := range []string{
		"audit: uid 0 GET /metadata/instance?api-version=2021-02-01: allow 200\n",
		"requests with status 200: 1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the example printed %q, want a line %q", got, want)
		}
	}
	if progs := testenv.AttachedPrograms(t, cg); len(progs) != 0 {
		t.Errorf("programs still attached to %s after the example stopped: %v", cg, progs)
	}
}

// TestShutdownLetsRequestsFinish: a request in flight when Run's context
// ends gets its answer; Run's shutdown waits for it (up to 5 s) instead of
// cutting the connection.
func TestShutdownLetsRequestsFinish(t *testing.T) {
	testenv.MustBeRoot(t) // the key store insists on a root-owned folder
	host := imdsHost(t, msp.ModeAudit)
	// A slow IMDS: it answers 300 ms after the request arrives.
	slow, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	arrived := make(chan struct{}, 1)
	go func() {
		for {
			c, err := slow.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				arrived <- struct{}{}
				time.Sleep(300 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
			}()
		}
	}()
	listen := freeLoopback(t)
	ready := make(chan netip.AddrPort, 1)
	a, err := agent.New(agent.Config{
		ListenAddr: listen, KeyFolder: filepath.Join(t.TempDir(), "keys"), NoRedirect: true,
		Endpoints: map[msp.Endpoint]netip.AddrPort{msp.EndpointWireServer: host.WireServerAddr(),
			msp.EndpointIMDS: netip.MustParseAddrPort(slow.Addr().String())},
	}, &agent.Options{
		Logger:   slog.New(slog.DiscardHandler),
		Resolver: &proxy.StaticResolver{Caller: &proxy.Caller{OriginalDst: msp.IMDSAddr, Claims: msp.Claims{UserName: "root", RunAsElevated: true}}},
		Ready:    func(a netip.AddrPort) { ready <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("never ready")
	}
	c, err := net.Dial("tcp", listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the slow host")
	}
	cancel() // the agent stops while the host is still answering
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, _ := io.ReadAll(c)
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 ")) || !bytes.HasSuffix(resp, []byte("slow")) {
		t.Errorf("the request in flight got %q, want the host's 200", resp)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
