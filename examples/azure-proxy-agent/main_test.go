package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/status"
)

// The test binary doubles as the agent binary for the demo test: the demo
// re-executes itself, and so do its sample callers.
const envAsAgent = "GPA_TEST_RUN_AS_AGENT"

func TestMain(m *testing.M) {
	if os.Getenv(envAsAgent) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], time.Now(), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args []string
		want *cli
		err  string
	}{
		{nil, &cli{}, ""},
		{[]string{"console"}, &cli{command: "console"}, ""},
		{[]string{"--status"}, &cli{status: true}, ""},
		{[]string{"-s", "-w", "120"}, &cli{status: true, wait: 120 * time.Second, waitSeen: true}, ""},
		{[]string{"--status", "--wait", "10", "-c", "/x.json"}, &cli{status: true, wait: 10 * time.Second, waitSeen: true, config: "/x.json"}, ""},
		{[]string{"-v"}, &cli{version: true}, ""},
		{[]string{"--wait", "5"}, nil, "--wait requires --status"},
		{[]string{"--status", "--wait", "soon"}, nil, "invalid value"},
		{[]string{"--status", "--wait"}, nil, "needs an argument"},
		{[]string{"--frobnicate"}, nil, "not defined"},
		{[]string{"console", "extra"}, nil, "unexpected argument"},
		{[]string{"launch"}, nil, "unknown command"},
	}
	for _, tt := range tests {
		got, err := parseArgs(tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: err = %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tt.args, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(cli{})); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.args, diff)
		}
	}
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, time.Now(), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersionHelpAndUsage(t *testing.T) {
	if code, out, _ := runCLI(t, "--version"); code != 0 || strings.TrimSpace(out) != version {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "--help"); code != 0 || !strings.Contains(out, "--status [--wait N]") {
		t.Errorf("--help: %d %q", code, out)
	}
	if code, _, errOut := runCLI(t, "--wait", "3"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("bad usage: %d %q", code, errOut)
	}
}

func TestServiceRefusesBadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(p, []byte(`{"logFolder":"/l"}`), 0o644)
	code, _, errOut := runCLI(t, "-c", p)
	if code != 1 || !strings.Contains(errOut, "missing required key") || !strings.Contains(errOut, p) {
		t.Errorf("exit %d: %s", code, errOut)
	}
	nope := filepath.Join(t.TempDir(), "nope.json")
	code, _, errOut = runCLI(t, "-c", nope, "console")
	if want := "azure-proxy-agent: configuration file " + nope + " not found; give an existing file with -c\n"; code != 1 || errOut != want {
		t.Errorf("missing file: exit %d: %q, want %q", code, errOut, want)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testAgent runs the agent in-process against msptest on loopback and
// returns a config file that --status can read.
func testAgent(t *testing.T, noRedirect bool, provisionTimeout time.Duration, cgroup string) (cfgPath string, cfg agent.Config, stop func()) {
	t.Helper()
	host := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "t"}}})
	t.Cleanup(host.Close)
	dir := t.TempDir()
	listen := freeAddr(t)
	cfg = agent.Config{
		ListenAddr: netip.MustParseAddrPort(listen), KeyFolder: filepath.Join(dir, "keys"), LogFolder: filepath.Join(dir, "log"),
		PollInterval: time.Second, ProvisionTimeout: provisionTimeout, NoRedirect: noRedirect, CgroupPath: cgroup,
		Endpoints: map[msp.Endpoint]netip.AddrPort{msp.EndpointWireServer: host.WireServerAddr()},
	}
	a, err := agent.New(cfg, &agent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cfg.StatusFolder = cfg.LogFolder
	cfgPath = filepath.Join(dir, "proxy-agent.json")
	b := strings.Replace(agent.ShippedConfigFile, `"logFolder"`, `"listenAddress":"`+listen+`","logFolder"`, 1)
	if err := os.WriteFile(cfgPath, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return cfgPath, cfg, stop
}

// The cloud-init contract against a live in-process agent whose eBPF
// cannot start: --status keeps polling, then reports the failure (exit 2)
// once provisioning times out.
func TestStatusReportsRedirectorFailure(t *testing.T) {
	testenv.MustBeRoot(t) // the key store insists on root-owned folders
	cfgPath, cfg, _ := testAgent(t, true, 1500*time.Millisecond, "")
	// Not finished yet: no --wait gives 1 at once.
	// Once the listener answers, not finished: upstream prints nothing on
	// stdout; our hint goes to stderr.
	for i := 0; i < 50; i++ {
		if _, err := status.QueryProvision(context.Background(), &status.QueryOptions{Addr: cfg.ListenAddr.String()}); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, out, errOut := runCLI(t, "-c", cfgPath, "--status")
	if code != 1 || out != "" || errOut != "Provisioning has not finished yet.\n" {
		t.Errorf("--status before the timeout: exit %d stdout %q stderr %q", code, out, errOut)
	}
	start := time.Now()
	code, out, errOut = runCLI(t, "-c", cfgPath, "--status", "--wait", "10")
	// Finished with errors: upstream's println of the errorMessage, whole.
	st, qerr := status.QueryProvision(context.Background(), &status.QueryOptions{Addr: cfg.ListenAddr.String()})
	if qerr != nil || code != 2 || out != st.ErrorMessage+"\n" || !strings.Contains(out, "ebpfProgramStatus - Failed to start redirector") || errOut != "" {
		t.Errorf("--status --wait 10: exit %d stdout %q stderr %q, want stdout %q (%v)", code, out, errOut, st.ErrorMessage+"\n", qerr)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
}

func TestStatusUnreachable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(p, []byte(strings.Replace(agent.ShippedConfigFile, `"logFolder"`, `"listenAddress":"`+freeAddr(t)+`","logFolder"`, 1)), 0o644)
	code, out, errOut := runCLI(t, "-c", p, "--status", "--wait", "1")
	// Agent down: upstream prints one line per failed query, every 100 ms.
	lines := strings.SplitAfter(strings.TrimSuffix(out, "\n"), "\n")
	if code != 1 || len(lines) < 2 {
		t.Errorf("exit %d, %d lines: %q", code, len(lines), out)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "Failed to query the current provision state with error: ") || !strings.HasSuffix(strings.TrimSuffix(l, "\n"), ".") {
			t.Errorf("stdout line %q is not upstream's", l)
		}
	}
	if !strings.HasPrefix(errOut, "Failed to query") {
		t.Errorf("stderr %q: want our hint", errOut)
	}
}

func childCgroup(t *testing.T) string {
	t.Helper()
	root, err := ebpf.CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	dir, err := os.MkdirTemp(root, "gpa-agent-test-")
	if err != nil {
		testenv.SkipOrFail(t, "cannot create a child cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	return dir
}

// With eBPF on a child cgroup and a host to latch from, provisioning
// completes: --status exits 0, and status.json says SUCCESS.
func TestStatusSucceedsWithLiveAgent(t *testing.T) {
	testenv.MustBeRoot(t)
	cg := childCgroup(t)
	cfgPath, cfg, stop := testAgent(t, false, 0, cg)
	code, out, _ := runCLI(t, "-c", cfgPath, "--status", "--wait", "20")
	// On success upstream prints nothing but a line for each query that
	// found the agent not yet listening.
	for _, l := range strings.SplitAfter(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "Failed to query the current provision state with error: ") {
			t.Errorf("stdout line %q is not upstream's", l)
		}
	}
	if code != 0 {
		t.Fatalf("--status --wait 20: exit %d %q", code, out)
	}
	// Idempotent, and quick once ready.
	start := time.Now()
	if code, _, _ := runCLI(t, "-c", cfgPath, "--status"); code != 0 || time.Since(start) > time.Second {
		t.Errorf("second --status: exit %d after %v", code, time.Since(start))
	}
	for _, f := range []string{"provisioned.tag", "status.tag"} {
		if _, err := os.Stat(filepath.Join(cfg.KeyFolder, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	statusFile := filepath.Join(cfg.StatusFolder, "status.json")
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, _ = os.ReadFile(statusFile); bytes.Contains(b, []byte(`"status": "SUCCESS"`)) {
			break
		}
	}
	if !bytes.Contains(b, []byte(`"status": "SUCCESS"`)) {
		t.Errorf("status.json never said SUCCESS:\n%s", b)
	}
	if len(testenv.AttachedPrograms(t, cg)) == 0 {
		t.Error("no programs attached to the test cgroup while the agent runs")
	}
	stop()
	// A stopped agent says so.
	b, _ = os.ReadFile(statusFile)
	if !bytes.Contains(b, []byte(`"status": "ERROR"`)) || !bytes.Contains(b, []byte("proxy listener stopped")) {
		t.Errorf("status.json after stop:\n%s", b)
	}
	// Close detached everything from the test cgroup.
	if progs := testenv.AttachedPrograms(t, cg); len(progs) != 0 {
		t.Errorf("programs still attached to %s: %v", cg, progs)
	}
}
