package agenttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/sandbox"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/status"
)

// Nobody is the unprivileged uid the callers use (and its gid).
const Nobody uint32 = 65534

// Root is uid 0.
const Root uint32 = 0

// Options configure New.
type Options struct {
	// Rules are the host's initial authorizationRules items.
	Rules map[msp.Endpoint]*msp.AuthorizationItem
	// Pin mounts a bpffs of the test's own and sets bpfPinFolder on it, so
	// the redirect outlives the agent process.
	Pin bool
	// Matcher, when set, is the config file's matcher key (canonical,
	// legacy or shadow).
	Matcher string
}

// Env is one agent under test with everything around it: the simulated
// host on the real metadata addresses, a child cgroup for the callers, the
// agent's folders and config file.
type Env struct {
	// Host is the simulated metadata host the agent and callers reach.
	Host *msptest.Host
	// Dir holds the agent's folders and its config file.
	Dir string
	// Cgroup is the child cgroup the programs attach to and callers run in.
	Cgroup string
	// ConfigPath is the agent's configuration file.
	ConfigPath string
	// LogDir holds status.json, ProxyAgent.log and the connection log.
	LogDir string
	// KeyDir is latchKeyFolder; RulesDir the local rules beside it.
	KeyDir, RulesDir string
	// PinDir is bpfPinFolder; empty without Options.Pin.
	PinDir string

	suite    *suite
	cgroupFD *os.File
	agent    *Agent
}

// New prepares an Env and registers its cleanup. It skips (fails under
// CI=true) unless the test runs as root inside the namespace Main made.
func New(t *testing.T, o *Options) *Env {
	t.Helper()
	testenv.MustBeRoot(t)
	if o == nil {
		o = &Options{}
	}
	s := current
	if s == nil {
		testenv.SkipOrFail(t, "agenttest.Main did not run: call it from TestMain")
	}
	testenv.Require(t, "a network namespace of the test's own with the metadata addresses on lo", s.setupErr)
	// Checked again here, right before anything listens on or dials a
	// metadata address.
	if own, err := sandbox.InOwnNetns(); err != nil || !own {
		testenv.SkipOrFail(t, "not in a network namespace of the test's own (%v)", err)
	}
	if _, err := exec.LookPath("go"); err != nil {
		testenv.SkipOrFail(t, "needs the go command to build the agent: %v", err)
	}
	if err := s.build(); err != nil {
		t.Fatal(err)
	}
	e := &Env{suite: s}
	var err error
	e.Dir, err = os.MkdirTemp(s.dir, "env-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup(t))
	e.LogDir = filepath.Join(e.Dir, "log")
	e.KeyDir = filepath.Join(e.Dir, "lib", "keys")
	e.RulesDir = filepath.Join(e.Dir, "lib", "rules")
	if err := os.Mkdir(filepath.Dir(e.KeyDir), 0o755); err != nil {
		t.Fatal(err)
	}

	root, err := ebpf.CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	cg, err := os.MkdirTemp(root, "gpa-e2e-")
	if err != nil {
		testenv.SkipOrFail(t, "cannot create a child cgroup: %v", err)
	}
	if filepath.Clean(cg) == filepath.Clean(root) {
		t.Fatal("refusing to use the cgroup root")
	}
	e.Cgroup = cg
	if e.cgroupFD, err = os.Open(cg); err != nil {
		t.Fatal(err)
	}

	if o.Pin {
		e.PinDir = filepath.Join(e.Dir, "bpffs")
		if err := os.Mkdir(e.PinDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("bpf", e.PinDir, "bpf", 0, "mode=0700"); err != nil {
			e.PinDir = ""
			testenv.SkipOrFail(t, "cannot mount a bpffs for pinning: %v", err)
		}
	}

	ls, err := msptest.ListenMetadata()
	if err != nil {
		t.Fatal(err)
	}
	e.Host = msptest.NewHost(&msptest.Options{Listeners: ls, Rules: o.Rules})

	cfg := map[string]any{
		"logFolder":                      e.LogDir,
		"eventFolder":                    filepath.Join(e.LogDir, "events"),
		"latchKeyFolder":                 e.KeyDir,
		"monitorIntervalInSeconds":       60,
		"pollKeyStatusIntervalInSeconds": 1,
		"ebpfProgramName":                "ebpf_cgroup.o",
		"fileLogLevel":                   "Info",
		"cgroupPath":                     e.Cgroup,
		// Never the real /dev/console; telemetry sent every second.
		"serialConsolePath":          e.ConsolePath(),
		"telemetryIntervalInSeconds": 1,
	}
	if e.PinDir != "" {
		cfg["bpfPinFolder"] = e.PinDir
	}
	if o.Matcher != "" {
		cfg["matcher"] = o.Matcher
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	// The agent opens the console without creating it, as /dev/console.
	if err := os.WriteFile(e.ConsolePath(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.ConfigPath = filepath.Join(e.Dir, "proxy-agent.json")
	if err := os.WriteFile(e.ConfigPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// cleanup undoes New in reverse: agent, pins and bpffs, host, cgroup, files.
func (e *Env) cleanup(t *testing.T) func() {
	return func() {
		if e.agent != nil {
			e.agent.stop(syscall.SIGTERM)
		}
		if e.PinDir != "" {
			if err := ebpf.RemovePins(e.PinDir); err != nil {
				t.Errorf("remove pins: %v", err)
			}
			if err := syscall.Unmount(e.PinDir, 0); err != nil {
				t.Errorf("unmount %s: %v", e.PinDir, err)
			}
		}
		if e.Host != nil {
			e.Host.Close()
		}
		if e.cgroupFD != nil {
			e.cgroupFD.Close()
		}
		if e.Cgroup != "" {
			var err error
			for i := 0; i < 100; i++ {
				if err = os.Remove(e.Cgroup); err == nil || errors.Is(err, os.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
		if e.Dir != "" {
			os.RemoveAll(e.Dir)
		}
	}
}

// AgentBinary is the path of the agent built for this run.
func (e *Env) AgentBinary() string { return e.suite.agentBin }

// StatusPath is status.json.
func (e *Env) StatusPath() string { return filepath.Join(e.LogDir, "status.json") }

// ConnectionLogPath is the connection (audit) log.
func (e *Env) ConnectionLogPath() string { return filepath.Join(e.LogDir, "ProxyAgent.Connection.log") }

// ConsolePath is the file the agent writes its serial console lines to
// instead of /dev/console.
func (e *Env) ConsolePath() string { return filepath.Join(e.Dir, "console") }

// AgentLogPath is the agent's own log.
func (e *Env) AgentLogPath() string { return filepath.Join(e.LogDir, "ProxyAgent.log") }

// StatusCLI runs `azure-proxy-agent -c CONFIG --status --wait N` and
// returns its exit code and stdout.
func (e *Env) StatusCLI(t *testing.T, wait int) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(wait+20)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.suite.agentBin, "-c", e.ConfigPath, "--status", "--wait", fmt.Sprint(wait))
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("--status: %v", err)
	return -1, ""
}

// ReadStatus parses status.json.
func (e *Env) ReadStatus() (*status.AggregateStatus, error) { return status.ReadFile(e.StatusPath()) }

// WaitStatus polls status.json until ok accepts it, and fails t after
// timeout with the last content.
func (e *Env) WaitStatus(t *testing.T, timeout time.Duration, what string, ok func(*status.AggregateStatus) bool) *status.AggregateStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := e.ReadStatus()
		if err == nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(e.StatusPath())
			t.Fatalf("status.json never showed %s within %v (read error %v):\n%s", what, timeout, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ConnectionLog returns the audit records written so far.
func (e *Env) ConnectionLog(t *testing.T) []msp.AuditRecord {
	t.Helper()
	b, err := os.ReadFile(e.ConnectionLogPath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var recs []msp.AuditRecord
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r msp.AuditRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("connection log line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// Command prepares argv to run in the cgroup as uid, with no proxy
// variables in its environment: a caller of any kind. Its Args[0] may be
// changed, to give the process another command line.
func (e *Env) Command(ctx context.Context, uid uint32, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(e.cgroupFD.Fd()), Pdeathsig: syscall.SIGKILL}
	if uid != Root {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
	}
	cmd.Dir = e.suite.dir
	// Under -race the caller is a race-instrumented binary, which sleeps a
	// second at exit unless told not to.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", envCaller + "=1", "GORACE=atexit_sleep_ms=0"}
	return cmd
}

func (e *Env) call(t *testing.T, uid uint32, spec callerSpec, timeout time.Duration) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	in, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.Command(ctx, uid, e.suite.callerBin)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caller (uid %d, %s): %v\n%s%s", uid, spec.Op, err, out, stderr.Bytes())
	}
	var res []Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("caller output %q: %v", out, err)
	}
	return res
}

// Get makes one GET with the Go client, as uid, from the cgroup.
func (e *Env) Get(t *testing.T, uid uint32, url string, header map[string]string) Result {
	t.Helper()
	return e.call(t, uid, callerSpec{Op: "get", URL: url, Header: header}, 30*time.Second)[0]
}

// Loop makes count GETs interval apart, as uid, from the cgroup. Start it
// in a goroutine to keep traffic flowing while the test acts.
func (e *Env) Loop(t *testing.T, uid uint32, url string, header map[string]string, count int, interval time.Duration) []Result {
	t.Helper()
	return e.call(t, uid, callerSpec{Op: "loop", URL: url, Header: header, Count: count, Interval: interval},
		time.Duration(count)*(interval+11*time.Second))
}

// Raw sends each request exactly as given, on a connection of its own to
// addr, as uid, from the cgroup: the way to send what a well-behaved
// client would normalise away.
func (e *Env) Raw(t *testing.T, uid uint32, addr string, requests ...string) []Result {
	t.Helper()
	return e.call(t, uid, callerSpec{Op: "raw", Addr: addr, Requests: requests}, time.Duration(len(requests)+1)*15*time.Second)
}

// Flood makes n connects to addr from the cgroup and closes each at once;
// it returns how many were started.
func (e *Env) Flood(t *testing.T, uid uint32, addr string, n int) int {
	t.Helper()
	r := e.call(t, uid, callerSpec{Op: "flood", Addr: addr, Count: n}, time.Minute)[0]
	if r.Err != "" {
		t.Logf("flood stopped early: %s", r.Err)
	}
	return r.Status
}

// Curl runs curl with args as uid from the cgroup and returns the HTTP
// status it printed (0 when it got none) and the body's SHA-256. Curl
// parses numeric host forms (0xa9fea9fe, 2852039166) as a user's client
// would, which the Go client does not. A first argument "--unshare-cr" runs
// curl under `unshare -Cr` (util-linux): root of a user namespace and a
// cgroup namespace of its own.
func (e *Env) Curl(t *testing.T, uid uint32, args ...string) Result {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		testenv.SkipOrFail(t, "needs curl: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The environment carries no proxy variables (see Command), so curl
	// goes where the URL says unless args has -x.
	var prefix []string
	if len(args) > 0 && args[0] == "--unshare-cr" {
		prefix, args = []string{"unshare", "-Cr"}, args[1:]
	}
	argv := append(append(prefix, "curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"), args...)
	cmd := e.Command(ctx, uid, argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	r := Result{Start: time.Now()}
	i := bytes.LastIndexByte(out, '\n')
	if i < 0 {
		r.Err = "curl: no output: " + strings.TrimSpace(stderr.String())
		return r
	}
	fmt.Sscan(string(out[i+1:]), &r.Status)
	if r.Status == 0 {
		r.Err = "curl: " + strings.TrimSpace(stderr.String())
	}
	r.BodySHA256 = sha256Hex(out[:i])
	return r
}
