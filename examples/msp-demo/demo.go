package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/sandbox"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/status"
)

// demoCallerCommand is the hidden subcommand the demo runs as its sample
// callers, inside the demo's cgroup and as the demo's users.
const demoCallerCommand = "demo-caller"

// exitInterrupted is the exit status after Ctrl-C, as a shell reports a
// process that SIGINT ended.
const exitInterrupted = 130

const nobodyID = 65534

// runDemo runs the whole protocol on this machine without touching it: a
// network namespace of its own with the metadata addresses on its loopback,
// a child cgroup for the callers, the simulated host, and the real agent.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var keepAudit string
	switch {
	case len(args) == 2 && args[0] == "--audit-log":
		keepAudit = args[1]
	case len(args) != 0:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, `msp-demo needs root: it creates a network namespace (169.254.169.254 and
168.63.129.16 on its own loopback, nothing leaves the machine), a child cgroup, and loads
eBPF programs into that cgroup only. Run it as root, for example:
  sudo env "PATH=$PATH" go run ./examples/msp-demo`)
		return 2
	}
	if os.Getenv(sandbox.EnvInNetns) != "1" {
		if keepAudit != "" {
			abs, err := filepath.Abs(keepAudit)
			if err != nil {
				fmt.Fprintln(stderr, "demo:", err)
				return 2
			}
			args = []string{"--audit-log", abs}
		}
		return reexecInNetns(ctx, args, stdout, stderr)
	}
	d := &demo{out: stdout, keepAudit: keepAudit}
	err := d.run(ctx)
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Fprintln(stdout, "\ninterrupted")
	}
	d.cleanup()
	switch {
	case interrupted:
		return exitInterrupted
	case err != nil:
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}

func reexecInNetns(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	cmd, err := sandbox.Command(ctx, append([]string{exe}, args...)...)
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// On Ctrl-C or SIGTERM the inner demo gets SIGINT and cleans up.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case ctx.Err() != nil:
		return exitInterrupted
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	fmt.Fprintln(stderr, "demo:", err)
	return 1
}

type demo struct {
	out      io.Writer
	dir      string // temporary state, logs, the caller binary
	cgroup   string
	cgroupFD *os.File
	host     *msptest.Host
	stop     context.CancelFunc
	done     chan struct{}
	audit    auditLines
	snaps    chan *keylatch.Snapshot
	// statusCopy is where the final status.json is kept.
	statusCopy string
	caller     string // the binary the callers run
	hasCurl    bool
	cleaned    []string
	// keepAudit, if set, receives a copy of the connection log.
	keepAudit string
}

// auditLines collects the proxy's audit records.
type auditLines struct {
	mu    sync.Mutex
	lines [][]byte
}

func (a *auditLines) Write(p []byte) (int, error) {
	a.mu.Lock()
	a.lines = append(a.lines, bytes.Clone(p))
	a.mu.Unlock()
	return len(p), nil
}

func (a *auditLines) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lines)
}

func (a *auditLines) since(n int) [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lines[n:]
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n== "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	if err := sandbox.SetupLoopback(ctx); err != nil {
		return err
	}
	d.step("sandbox: a network namespace of our own, 169.254.169.254 and 168.63.129.16 on its loopback")

	root, err := ebpf.CgroupV2Root()
	if err != nil {
		return err
	}
	d.cgroup = filepath.Join(root, fmt.Sprintf("gpa-demo-%d", os.Getpid()))
	if filepath.Clean(d.cgroup) == filepath.Clean(root) {
		return errors.New("refusing to use the cgroup root")
	}
	if err := os.Mkdir(d.cgroup, 0o755); err != nil {
		return fmt.Errorf("create demo cgroup: %w", err)
	}
	if d.cgroupFD, err = os.Open(d.cgroup); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   cgroup for the sample callers: %s\n", d.cgroup)

	if d.dir, err = os.MkdirTemp("", "gpa-demo-"); err != nil {
		return err
	}
	if err := os.Chmod(d.dir, 0o755); err != nil {
		return err
	}
	if d.caller, err = copySelf(filepath.Join(d.dir, "demo-caller")); err != nil {
		return err
	}
	_, err = exec.LookPath("curl")
	d.hasCurl = err == nil

	if err := d.startHost(); err != nil {
		return err
	}
	d.step("simulated host (msptest) on the real addresses; IMDS and WireServer in Audit")
	t0 := time.Now()
	if err := d.startAgent(ctx); err != nil {
		return err
	}
	res, err := status.WaitProvisioned(ctx, &status.WaitOptions{Addr: msp.ProxyAddr.String(), Wait: 60 * time.Second, Start: t0})
	d.step("agent started: eBPF attached to the demo cgroup, key latched, proxy on 127.0.0.1:3080")
	fmt.Fprintf(d.out, "   azure-proxy-agent --status: exit %d after %d ms %s\n", res.ExitCode(), time.Since(t0).Milliseconds(), res.Report())
	if err != nil || res.ExitCode() != 0 {
		return fmt.Errorf("agent did not provision: %v %s", err, res.Report())
	}
	if err := d.waitState(ctx, "IMDS Audit"); err != nil {
		return err
	}
	d.step("phase 1: Audit: denials are logged and forwarded; WireServer still requires root")
	d.callers(ctx)

	d.host.SetModes(map[msp.Endpoint]msp.Mode{msp.EndpointIMDS: msp.ModeEnforce, msp.EndpointWireServer: msp.ModeEnforce})
	if err := d.waitState(ctx, "IMDS Enforce"); err != nil {
		return err
	}
	d.step("phase 2: the VM owner switched both endpoints to Enforce: denials get 403, the host requires signatures")
	d.callers(ctx)

	oldKey, _ := d.host.LatchedKey()
	old := oldKey.GUID
	inc := d.host.ResetKey()
	if err := d.waitKeyChange(ctx, old); err != nil {
		return err
	}
	d.step("phase 3: key reset at the host (keyIncarnationId %d): the agent latched a new key", inc)
	d.runCallers(ctx, d.sampleCallers()[:1])

	// Let the writer flush the last change (it writes at most once a
	// second), unless Ctrl-C comes first.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(1200 * time.Millisecond):
	}
	b, err := os.ReadFile(filepath.Join(d.dir, "log", agent.StatusFileName))
	if err != nil {
		return err
	}
	d.step("status.json")
	if err := summarizeStatus(d.out, b); err != nil {
		return err
	}
	d.statusCopy = filepath.Join(os.TempDir(), "msp-demo-status.json")
	if err := os.WriteFile(d.statusCopy, b, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   the whole file: %s\n", d.statusCopy)
	return nil
}

func copySelf(dst string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	src, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return "", err
	}
	return dst, f.Close()
}

func demoRules(mode msp.Mode) map[msp.Endpoint]*msp.AuthorizationItem {
	return map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: mode, DefaultAccess: msp.AccessDeny, ID: "demo-imds-rules", Rules: &msp.AccessControlRules{
			Privileges:      []msp.Privilege{{Name: "instance-metadata", Path: "/metadata/instance"}},
			Roles:           []msp.Role{{Name: "readers", Privileges: []string{"instance-metadata"}}},
			Identities:      []msp.Identity{{Name: "root", UserName: "root"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "readers", Identities: []string{"root"}}},
		}},
		msp.EndpointWireServer: {Mode: mode, DefaultAccess: msp.AccessAllow, ID: "demo-wireserver-rules"},
	}
}

func (d *demo) startHost() error {
	ls, err := msptest.ListenMetadata()
	if err != nil {
		return err
	}
	d.host = msptest.NewHost(&msptest.Options{Listeners: ls, Rules: demoRules(msp.ModeAudit)})
	return nil
}

func (d *demo) startAgent(ctx context.Context) error {
	cfg := agent.Config{
		KeyFolder:    filepath.Join(d.dir, "keys"),
		LogFolder:    filepath.Join(d.dir, "log"),
		PollInterval: time.Second,
		CgroupPath:   d.cgroup,
	}
	d.snaps = make(chan *keylatch.Snapshot, 64)
	ready := make(chan struct{})
	a, err := agent.New(cfg, &agent.Options{
		AuditLog: &d.audit,
		Logger:   slog.New(slog.DiscardHandler),
		Ready:    func(netip.AddrPort) { close(ready) },
		OnSnapshot: func(s *keylatch.Snapshot) {
			select {
			case d.snaps <- s:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	agentCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d.stop, d.done = stop, make(chan struct{})
	go func() {
		defer close(d.done)
		if err := a.Run(agentCtx); err != nil {
			fmt.Fprintln(d.out, "agent:", err)
		}
	}()
	select {
	case <-ready:
		return nil
	case <-d.done:
		return errors.New("agent stopped during start")
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		// Ready never comes when the listener cannot bind; status.json
		// says why.
		b, _ := os.ReadFile(filepath.Join(d.dir, "log", agent.StatusFileName))
		return fmt.Errorf("the agent's listener did not start within 30 s; status.json:\n%s", b)
	}
}

func (d *demo) waitSnapshot(ctx context.Context, ok func(*keylatch.Snapshot) bool) error {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-d.snaps:
			if ok(s) {
				return nil
			}
		case <-timeout:
			return errors.New("the agent did not pick up the host's change within 30 s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *demo) waitState(ctx context.Context, want string) error {
	return d.waitSnapshot(ctx, func(s *keylatch.Snapshot) bool { return strings.Contains(s.State, want) && s.Key.Valid() })
}

func (d *demo) waitKeyChange(ctx context.Context, old string) error {
	return d.waitSnapshot(ctx, func(s *keylatch.Snapshot) bool { return s.Key.Valid() && s.Key.GUID != old })
}

type sampleCaller struct {
	who  string
	uid  uint32
	curl bool
	url  string
}

func (d *demo) sampleCallers() []sampleCaller {
	cs := []sampleCaller{
		{"root", 0, false, "http://169.254.169.254/metadata/instance?api-version=2021-02-01"},
		{"nobody", nobodyID, false, "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"},
		{"nobody", nobodyID, false, "http://168.63.129.16/machine?comp=goalstate"},
		{"root", 0, false, "http://168.63.129.16/machine?comp=goalstate"},
		{"root", 0, false, "http://169.254.169.254/metadata/%2e%2e/identity/oauth2/token?resource=x"},
	}
	if d.hasCurl {
		cs = append(cs, sampleCaller{"nobody", nobodyID, true, "http://169.254.169.254/metadata/instance?api-version=2021-02-01&format=json"})
	}
	return cs
}

func (d *demo) callers(ctx context.Context) { d.runCallers(ctx, d.sampleCallers()) }

func (d *demo) runCallers(ctx context.Context, cs []sampleCaller) {
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   CALLER\tREQUEST\tSTATUS\tDECISION\tRULE\tHOST SAW")
	for _, c := range cs {
		if ctx.Err() != nil {
			break
		}
		before, hostBefore := d.audit.count(), len(d.host.Requests())
		code := d.call(ctx, c)
		rec := d.waitAudit(ctx, before)
		// The agent's own key-status polls reach the host too; find this
		// caller's request by its target.
		var mine []msptest.Request
		for _, r := range d.host.Requests()[hostBefore:] {
			if !r.SecureChannel && r.RawURI == requestTarget(c.url) {
				mine = append(mine, r)
			}
		}
		var hostSaw string
		if len(mine) == 0 {
			hostSaw = "nothing (blocked by the agent)"
		} else {
			r := mine[len(mine)-1]
			switch {
			case r.SignatureValid:
				hostSaw = fmt.Sprintf("%d, signature valid", r.Status)
			case r.Signed:
				hostSaw = fmt.Sprintf("%d, signature INVALID", r.Status)
			default:
				hostSaw = fmt.Sprintf("%d, unsigned", r.Status)
			}
		}
		who := c.who
		if c.curl {
			who += " (curl)"
		}
		u := strings.TrimPrefix(c.url, "http://")
		if len(u) > 64 {
			u = u[:61] + "..."
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t%s\t%s\n", who, u, code, rec.decision(), rec.rule(), hostSaw)
	}
	tw.Flush()
}

// requestTarget is the origin-form target of an absolute http URL.
func requestTarget(u string) string {
	rest := strings.TrimPrefix(u, "http://")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return "/"
}

type auditRecord struct {
	Decision     string `json:"decision"`
	Rule         string `json:"rule"`
	Reason       string `json:"reason"`
	Privilege    string `json:"privilege"`
	ErrorDetails string `json:"errorDetails"`
}

func (r *auditRecord) decision() string {
	if r == nil || r.Decision == "" {
		return "-"
	}
	return r.Decision
}

func (r *auditRecord) rule() string {
	if r == nil {
		return "-"
	}
	if r.Decision == "" && r.ErrorDetails != "" {
		return r.ErrorDetails
	}
	s := r.Reason
	if r.Privilege != "" {
		s += " " + r.Privilege
	}
	if r.Rule != "" {
		s += " (" + r.Rule + ")"
	}
	return s
}

func (d *demo) waitAudit(ctx context.Context, before int) *auditRecord {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if lines := d.audit.since(before); len(lines) > 0 {
			var r auditRecord
			if json.Unmarshal(lines[len(lines)-1], &r) == nil {
				return &r
			}
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// call runs one sample caller in the demo cgroup as its user and returns
// the HTTP status it saw.
func (d *demo) call(ctx context.Context, c sampleCaller) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if c.curl {
		cmd = exec.CommandContext(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Metadata: true", c.url)
	} else {
		cmd = exec.CommandContext(ctx, d.caller, demoCallerCommand, c.url)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.cgroupFD.Fd())}
	if c.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.uid, Gid: c.uid}
	}
	cmd.Dir = d.dir
	out, err := cmd.Output()
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}

// runDemoCaller is a sample client: it asks for url and prints the status.
// It writes its one GET itself, so the request target goes on the wire
// exactly as given ("%2e%2e" included), which an http.Client would not
// promise.
func runDemoCaller(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: msp-demo demo-caller URL")
		return 2
	}
	u, err := url.Parse(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	code, err := demoGet(ctx, u)
	if err != nil {
		fmt.Fprintln(stdout, "no response")
		return 0
	}
	fmt.Fprintln(stdout, code)
	return 0
}

// demoGet sends GET u with the Metadata header on a connection of its own
// and returns the status code after reading the body.
func demoGet(ctx context.Context, u *url.URL) (int, error) {
	if u.Scheme != "http" || u.Host == "" {
		return 0, fmt.Errorf("unsupported URL %q", u)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, "GET "+u.RequestURI()+" HTTP/1.1\r\nHost: "+u.Host+"\r\nMetadata: true\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodGet})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// The status line is what the demo prints; a body cut short does not
	// change it.
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// cleanup stops the agent and removes everything the demo made. It runs on
// success, on error and on Ctrl-C.
func (d *demo) cleanup() {
	if d.stop != nil {
		d.stop()
		<-d.done
		d.cleaned = append(d.cleaned, "agent stopped, eBPF programs detached")
	}
	if d.host != nil {
		d.host.Close()
	}
	if d.cgroupFD != nil {
		d.cgroupFD.Close()
	}
	if d.cgroup != "" {
		// The callers have exited; a cgroup without processes can go.
		for i := 0; i < 50; i++ {
			if err := os.Remove(d.cgroup); err == nil || errors.Is(err, os.ErrNotExist) {
				d.cleaned = append(d.cleaned, "cgroup "+d.cgroup+" removed")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if d.dir != "" && d.keepAudit != "" {
		if b, err := os.ReadFile(filepath.Join(d.dir, "log", agent.ConnectionLogName)); err == nil && os.WriteFile(d.keepAudit, b, 0o600) == nil {
			d.cleaned = append(d.cleaned, "connection log kept in "+d.keepAudit)
		}
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
		d.cleaned = append(d.cleaned, "state folder "+d.dir+" removed")
	}
	d.cleaned = append(d.cleaned, "network namespace ends with this process")
	fmt.Fprintf(d.out, "\n== cleaned up: %s\n", strings.Join(d.cleaned, "; "))
}
