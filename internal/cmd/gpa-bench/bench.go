package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/sandbox"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/status"
)

// imdsPath is the request every row sends.
const imdsPath = "/metadata/instance?api-version=2021-02-01"

// nginxAddr is where nginx listens, proxying to IMDS; nginxLogAddr is the
// same proxy writing an access log.
const (
	nginxAddr    = "127.0.0.1:8081"
	nginxLogAddr = "127.0.0.1:8082"
	relayAddr    = "127.0.0.1:8083"
)

// bench is one run of the measurement, inside the namespace.
type bench struct {
	o                *options
	out              io.Writer
	dir              string
	self             string
	host             *msptest.Host
	agent            *exec.Cmd
	nginx            *exec.Cmd
	relay            *exec.Cmd
	cgBench, cgPlain string // the load generator's cgroups: with and without our programs
	fdBench, fdPlain *os.File
	res              results
}

// runBench measures everything and prints the tables. It cleans up on
// every path: agent and nginx stopped, cgroups removed, files deleted.
func runBench(ctx context.Context, o *options, out io.Writer) error {
	b := &bench{o: o, out: out}
	err := b.run(ctx)
	b.cleanup()
	return err
}

func (b *bench) run(ctx context.Context) error {
	if b.o.agentBinary == "" {
		return errors.New("no agent binary")
	}
	if err := sandbox.SetupLoopback(ctx); err != nil {
		return err
	}
	// Per-namespace settings: connections per request must not run out of
	// ports. SetupLoopback proved the namespace is ours.
	for f, v := range map[string]string{
		"/proc/sys/net/ipv4/tcp_tw_reuse":        "1",
		"/proc/sys/net/ipv4/ip_local_port_range": "10000 65000",
	} {
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			return fmt.Errorf("namespace sysctl %s: %w", f, err)
		}
	}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "gpa-bench-"); err != nil {
		return err
	}
	if err := b.makeCgroups(); err != nil {
		return err
	}
	b.res.machine = describeMachine(ctx)
	fmt.Fprintf(b.out, "machine: %s\n", b.res.machine)
	if fi, err := os.Stat(b.o.agentBinary); err == nil {
		b.res.binarySize = fi.Size()
	}

	// 1. Exec to SUCCESS, each time a first boot against a fresh host.
	for i := 0; i < b.o.startups; i++ {
		if err := b.startHost(); err != nil {
			return err
		}
		d, err := b.startAgent(ctx, fmt.Sprintf("boot%d", i))
		if err != nil {
			return err
		}
		b.res.startups = append(b.res.startups, d)
		fmt.Fprintf(b.out, "start %d: SUCCESS after %v\n", i+1, d.Round(100*time.Microsecond))
		if i < b.o.startups-1 {
			b.stopAgent()
			b.host.Close()
			b.host = nil
		}
	}
	if !b.o.noNginx {
		if err := b.startNginx(ctx); err != nil {
			return err
		}
	}
	if err := b.startRelay(ctx); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	if s, err := readProc(b.agent.Process.Pid); err == nil {
		b.res.rssIdle = s.RSS
	}

	// 2. The side-by-side cells. Targets inside a mode run back to back so
	// that drift on the shared machine hits all of them alike, in rounds
	// that each start at another target, so that none always runs first
	// or last; a cell pools its rounds.
	targets := []string{targetDirect, targetAgent}
	if !b.o.noNginx {
		targets = append(targets, targetNginx, targetNginxLog)
	}
	targets = append(targets, targetRelay)
	for _, m := range cellModes {
		pooled := map[string]*cellResult{}
		for r := range b.o.rounds {
			for i := range targets {
				t := targets[(i+r)%len(targets)]
				c, err := b.cell(ctx, t, m)
				if err != nil {
					return err
				}
				fmt.Fprintf(b.out, "round %d  %s\n", r+1, c.line())
				if p := pooled[t]; p != nil {
					p.pool(c)
				} else {
					pooled[t] = c
				}
			}
		}
		for _, t := range targets {
			b.res.cells = append(b.res.cells, pooled[t])
		}
	}

	// 3. Memory after many requests.
	if b.o.soak > 0 {
		if err := b.soak(ctx); err != nil {
			return err
		}
	}

	if b.o.cpuProfile != "" {
		if err := b.profileAgent(ctx); err != nil {
			return err
		}
	}

	// 4. connect() to a destination we do not protect.
	if err := b.connectRate(ctx); err != nil {
		return err
	}

	report := b.res.markdown(b.o)
	fmt.Fprintln(b.out)
	fmt.Fprint(b.out, report)
	if b.o.readme != "" {
		if err := writeReadme(b.o.readme, report); err != nil {
			return err
		}
		fmt.Fprintf(b.out, "\nwrote the tables into %s\n", b.o.readme)
	}
	return nil
}

func (b *bench) makeCgroups() error {
	root, err := ebpf.CgroupV2Root()
	if err != nil {
		return err
	}
	for _, p := range []struct {
		suffix string
		path   *string
		fd     **os.File
	}{{"load", &b.cgBench, &b.fdBench}, {"plain", &b.cgPlain, &b.fdPlain}} {
		dir := filepath.Join(root, fmt.Sprintf("gpa-bench-%d-%s", os.Getpid(), p.suffix))
		if filepath.Clean(filepath.Dir(dir)) != filepath.Clean(root) || filepath.Clean(dir) == filepath.Clean(root) {
			return errors.New("refusing to use the cgroup root")
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup: %w", err)
		}
		*p.path = dir
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		*p.fd = f
	}
	return nil
}

// benchRules: IMDS in Audit so that the direct and nginx rows (unsigned)
// get the same 200 as the agent's signed requests; the agent still
// identifies, authorizes, signs and audits every request.
func benchRules() map[msp.Endpoint]*msp.AuthorizationItem {
	return map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessDeny, ID: "bench-imds-rules", Rules: &msp.AccessControlRules{
			Privileges:      []msp.Privilege{{Name: "instance-metadata", Path: "/metadata/instance"}},
			Roles:           []msp.Role{{Name: "readers", Privileges: []string{"instance-metadata"}}},
			Identities:      []msp.Identity{{Name: "root", UserName: "root"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "readers", Identities: []string{"root"}}},
		}},
		msp.EndpointWireServer: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "bench-wireserver-rules"},
	}
}

// fastIMDSBody is a small instance document: the proxy, not msptest's
// response builder, is what the rows compare.
const fastIMDSBody = `{"compute":{"azEnvironment":"AzurePublicCloud","location":"westeurope","name":"bench-vm","osType":"Linux","vmId":"00000000-0000-0000-0000-000000000000","vmSize":"Standard_D2s_v5"},"network":{"interface":[]}}`

func (b *bench) startHost() error {
	ls, err := msptest.ListenMetadata()
	if err != nil {
		return err
	}
	b.host = msptest.NewHost(&msptest.Options{Listeners: ls, Rules: benchRules()})
	if b.o.fastIMDS {
		b.host.SetHandler(msp.EndpointIMDS, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			io.WriteString(w, fastIMDSBody)
		}))
	}
	return nil
}

// agentConfig is the shipped configuration with the folders moved into the
// run's directory and the programs attached to the load cgroup only.
func (b *bench) agentConfig(name string) ([]byte, error) {
	if b.cgBench == "" {
		// An empty cgroupPath means the cgroup root to the agent.
		return nil, errors.New("refusing to start the agent without its child cgroup")
	}
	base := filepath.Join(b.dir, name)
	cfg := map[string]any{
		"logFolder":                      filepath.Join(base, "log"),
		"eventFolder":                    filepath.Join(base, "log", "events"),
		"latchKeyFolder":                 filepath.Join(base, "keys"),
		"statusFolder":                   filepath.Join(base, "log"),
		"monitorIntervalInSeconds":       60,
		"pollKeyStatusIntervalInSeconds": 15,
		"hostGAPluginSupport":            1,
		"ebpfProgramName":                "ebpf_cgroup.o",
		"fileLogLevel":                   "Info",
		"fileLogLevelForEvents":          "Info",
		"fileLogLevelForSystemEvents":    "Info",
		"canonicalRequestMode":           "Shadow",
		"cgroupPath":                     b.cgBench,
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// startAgent execs the agent binary and returns the time from just before
// exec to the first /provision answer that says SUCCESS.
func (b *bench) startAgent(ctx context.Context, name string) (time.Duration, error) {
	cfg, err := b.agentConfig(name)
	if err != nil {
		return 0, err
	}
	path := filepath.Join(b.dir, name+".json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return 0, err
	}
	logf, err := os.Create(filepath.Join(b.dir, name+".stderr"))
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(b.o.agentRunBinary, "-c", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = diesWithHarness()
	if b.o.agentGOMAXPROCS > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", b.o.agentGOMAXPROCS))
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the agent: %w", err)
	}
	b.agent = cmd
	res, err := status.WaitProvisioned(ctx, &status.WaitOptions{Addr: msp.ProxyAddr.String(), Wait: 20 * time.Second, Start: t0, Interval: time.Millisecond})
	d := time.Since(t0)
	if err != nil || res.ExitCode() != 0 {
		return 0, fmt.Errorf("agent did not reach SUCCESS: %v %s (see %s)", err, res.Report(), logf.Name())
	}
	return d, nil
}

func (b *bench) stopAgent() {
	if b.agent == nil {
		return
	}
	stopProcess(b.agent, syscall.SIGTERM)
	b.agent = nil
}

// stopProcess sends sig to a started cmd and waits for it to exit, killing
// it after 10 s.
func stopProcess(cmd *exec.Cmd, sig os.Signal) {
	cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// diesWithHarness has a child sent SIGTERM when the harness dies, even by
// SIGKILL, when cleanup cannot run: the namespace lives as long as a
// process in it does, and the agent's programs stay attached while it runs.
// Linux sends it when the thread that forked the child ends; nothing in
// the harness locks a goroutine to its thread, so threads end only with
// the process.
func diesWithHarness() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// startRelay starts this binary as the relay row's proxy and waits until
// it listens.
func (b *bench) startRelay(ctx context.Context) error {
	cmd := exec.Command(b.self, cmdRelay, relayAddr, msp.IMDSAddr.String())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = diesWithHarness()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the relay: %w", err)
	}
	b.relay = cmd
	return waitListening(ctx, relayAddr, func() string { return "" })
}

// waitListening waits up to 10 s for addr to accept a connection; why adds
// what the process logged to the error.
func waitListening(ctx context.Context, addr string, why func() string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("nothing listened on %s%s: %w", addr, why(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bench) startNginx(ctx context.Context) error {
	bin, err := nginxPath()
	if err != nil {
		return err
	}
	prefix := filepath.Join(b.dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		return err
	}
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(prefix)), 0o644); err != nil {
		return err
	}
	errLog := filepath.Join(prefix, "error.log")
	cmd := exec.Command(bin, "-p", prefix, "-c", conf, "-e", errLog)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = diesWithHarness()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nginx: %w", err)
	}
	b.nginx = cmd
	return waitListening(ctx, nginxAddr, func() string {
		log, _ := os.ReadFile(errLog)
		return ": nginx: " + string(log)
	})
}

// nginxConfig is a plain reverse proxy to IMDS with upstream keep-alive:
// what a user would otherwise put in front of the metadata service. The
// second server is the same proxy with an access log, buffered and flushed
// every 100 ms as the agent buffers its connection log, so the agent's
// audit record per request can be compared with nginx doing the like; the
// goals are judged against the first.
func nginxConfig(prefix string) string {
	const location = `
    location / {
      proxy_pass http://imds;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }`
	return fmt.Sprintf(`# gpa-bench: nginx as a plain reverse proxy to IMDS.
daemon off;
master_process on;
worker_processes auto;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  upstream imds {
    server 169.254.169.254:80;
    keepalive 128;
  }
  server {
    listen %[2]s backlog=4096;%[4]s
  }
  server {
    listen %[3]s backlog=4096;
    access_log %[1]s/access.log combined buffer=64k flush=100ms;%[4]s
  }
}
`, prefix, nginxAddr, nginxLogAddr, location)
}

// The rows' targets.
const (
	targetDirect = "direct"
	targetAgent  = "agent"
	targetNginx  = "nginx"
	// targetNginxLog is nginx writing an access log: for comparison, not
	// a goal.
	targetNginxLog = "nginx+log"
	// targetRelay is the least a Go proxy does (relay.go): for
	// comparison, not a goal.
	targetRelay = "go relay"
)

type cellMode struct {
	clients int
	newConn bool
}

func (m cellMode) String() string {
	if m.newConn {
		return fmt.Sprintf("%d, new conn", m.clients)
	}
	return fmt.Sprintf("%d keep-alive", m.clients)
}

var cellModes = []cellMode{{1, false}, {8, false}, {64, false}, {8, true}}

// cellResult is one row of the side-by-side table.
type cellResult struct {
	target   string
	mode     cellMode
	load     *loadResult
	proxyCPU time.Duration // the agent's, the relay's or nginx's (master and workers)
	hostCPU  time.Duration // msptest, in this process
	loadCPU  time.Duration // the generator
	maxRSS   int64         // the agent's, sampled
	badSigs  int           // agent row: requests the host saw without a valid signature
	// rates are the request rates of the pooled rounds, in round order;
	// nil for a single round.
	rates []float64
}

// pool adds another round of the same cell: requests, time, errors and
// CPU add up and the latencies merge, so the rate and the CPU per request
// are those of all rounds together.
func (c *cellResult) pool(o *cellResult) {
	c.rates = append(c.roundRates(), o.roundRates()...)
	l, ol := c.load, o.load
	l.Requests += ol.Requests
	l.Errors += ol.Errors
	l.NonOK += ol.NonOK
	l.Elapsed += ol.Elapsed
	if l.FirstErr == "" {
		l.FirstErr = ol.FirstErr
	}
	if l.Latencies == nil {
		l.Latencies = newHistogram()
	}
	if ol.Latencies != nil {
		l.Latencies.merge(ol.Latencies)
	}
	c.proxyCPU += o.proxyCPU
	c.hostCPU += o.hostCPU
	c.loadCPU += o.loadCPU
	c.maxRSS = max(c.maxRSS, o.maxRSS)
	c.badSigs += o.badSigs
}

// roundRates returns the rate of each round pooled into c.
func (c *cellResult) roundRates() []float64 {
	if c.rates == nil {
		return []float64{c.load.Rate()}
	}
	return c.rates
}

func (c *cellResult) perTenK(d time.Duration) float64 {
	if c.load.Requests == 0 {
		return 0
	}
	return d.Seconds() * 10000 / float64(c.load.Requests)
}

func (c *cellResult) line() string {
	l := c.load
	return fmt.Sprintf("%-9s %-14s %9.0f req/s  p50 %-9v p99 %-9v p99.9 %-9v errors %d non-200 %d %s",
		c.target, c.mode, l.Rate(), l.Latencies.quantile(0.5).Round(time.Microsecond),
		l.Latencies.quantile(0.99).Round(time.Microsecond), l.Latencies.quantile(0.999).Round(time.Microsecond),
		l.Errors, l.NonOK, l.FirstErr)
}

// runGenerator runs the generator with spec, in cgroup when it is not nil
// (the load cgroup, so that its connects go through our programs), and
// returns its result and the CPU time it used.
func (b *bench) runGenerator(ctx context.Context, spec *loadSpec, cgroup *os.File) (*loadResult, time.Duration, error) {
	arg, err := json.Marshal(spec)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Duration+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.self, cmdLoad, string(arg))
	if cgroup != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgroup.Fd())}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("load generator: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var res loadResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, 0, fmt.Errorf("load generator output: %w", err)
	}
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return &res, cpu, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (b *bench) cell(ctx context.Context, target string, m cellMode) (*cellResult, error) {
	spec := &loadSpec{Mode: "http", Host: msp.IMDSAddr.Addr().String(), Path: imdsPath,
		Clients: m.clients, NewConn: m.newConn, Duration: b.o.duration, Warmup: 1}
	var cg *os.File
	// proxyCPU fails once the proxy is gone: one that died during the
	// cell must not leave a zero or negative CPU figure behind.
	proxyCPU := func() (time.Duration, error) { return 0, nil }
	procCPU := func(pid int) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			s, err := readProc(pid)
			return s.CPU, err
		}
	}
	switch target {
	case targetDirect:
		spec.Addr = msp.IMDSAddr.String()
	case targetAgent:
		spec.Addr, cg = msp.IMDSAddr.String(), b.fdBench
		proxyCPU = procCPU(b.agent.Process.Pid)
	case targetRelay:
		spec.Addr = relayAddr
		proxyCPU = procCPU(b.relay.Process.Pid)
	case targetNginx, targetNginxLog:
		spec.Addr = nginxAddr
		if target == targetNginxLog {
			spec.Addr = nginxLogAddr
		}
		pid := b.nginx.Process.Pid
		proxyCPU = func() (time.Duration, error) { return treeCPU(pid) }
	}
	b.host.ResetRequests()
	c := &cellResult{target: target, mode: m}
	stopSampler := b.sampleRSS(&c.maxRSS)
	h0 := selfCPU()
	p0, err := proxyCPU()
	if err != nil {
		stopSampler()
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	res, loadCPU, err := b.runGenerator(ctx, spec, cg)
	p1, perr := proxyCPU()
	h1 := selfCPU()
	stopSampler()
	if err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, fmt.Errorf("%s: %w", target, perr)
	}
	c.load, c.loadCPU, c.proxyCPU, c.hostCPU = res, loadCPU, p1-p0, h1-h0
	if target == targetAgent {
		c.badSigs = b.unsignedIMDS()
	}
	b.host.ResetRequests()
	return c, nil
}

// unsignedIMDS counts IMDS requests the host saw without a valid signature:
// through the agent there must be none.
func (b *bench) unsignedIMDS() int {
	n := 0
	for _, r := range b.host.Requests() {
		if r.Endpoint == msp.EndpointIMDS && !r.SignatureValid {
			n++
		}
	}
	return n
}

// sampleRSS records the agent's largest RSS until the returned func is
// called.
func (b *bench) sampleRSS(maxRSS *int64) func() {
	pid := b.agent.Process.Pid
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if s, err := readProc(pid); err == nil && s.RSS > *maxRSS {
				*maxRSS = s.RSS
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

// soak sends o.soak requests through the agent in ten chunks and compares
// the RSS after the first chunk (warm) with the RSS after the last.
func (b *bench) soak(ctx context.Context) error {
	chunk := max(b.o.soak/10, 1)
	start := time.Now()
	var sent, bad int64
	for i := 0; sent < b.o.soak; i++ {
		spec := &loadSpec{Mode: "http", Addr: msp.IMDSAddr.String(), Host: msp.IMDSAddr.Addr().String(), Path: imdsPath,
			Clients: 8, Count: min(chunk, b.o.soak-sent), Duration: 3 * time.Minute}
		b.host.ResetRequests()
		res, _, err := b.runGenerator(ctx, spec, b.fdBench)
		if err != nil {
			return err
		}
		bad += int64(b.unsignedIMDS())
		b.host.ResetRequests()
		sent += res.Requests + res.Errors
		b.res.soakErrors += res.Errors + res.NonOK
		if res.Requests+res.Errors == 0 {
			return errors.New("soak: the generator made no progress")
		}
		s, err := readProc(b.agent.Process.Pid)
		if err != nil {
			return err
		}
		if i == 0 {
			b.res.rssWarm = s.RSS
		}
		b.res.rssSoak = s.RSS
		fmt.Fprintf(b.out, "soak: %d requests, agent RSS %.1f MB\n", sent, mb(s.RSS))
	}
	b.res.soakRequests, b.res.soakTime, b.res.soakBadSigs = sent, time.Since(start), bad
	return nil
}

// connectRate compares connect() to a destination the agent does not
// protect from the load cgroup (programs attached) and from a sibling
// cgroup (nothing attached), alternating so drift hits both alike. The
// goal is judged on connects per CPU-second of the connecting process,
// where the programs' cost is charged; the wall-clock rate on a shared
// machine moves by more than the 3 % being measured.
func (b *bench) connectRate(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	progs, err := openCgroupPrograms(int(b.fdBench.Fd()))
	if err != nil {
		return err
	}
	defer progs.Close()
	spec := &loadSpec{Mode: "connect", Addr: ln.Addr().String(), Clients: 1, Duration: 700 * time.Millisecond}
	var with, without, withCPU, withoutCPU []float64
	var inBPF time.Duration
	var withConnects int64
	for i := 0; i < 9; i++ {
		for _, on := range []bool{false, true} {
			fd := b.fdPlain
			if on {
				fd = b.fdBench
			}
			rt0, err := progs.runtime()
			if err != nil {
				return err
			}
			res, cpu, err := b.runGenerator(ctx, spec, fd)
			if err != nil {
				return err
			}
			rt1, err := progs.runtime()
			if err != nil {
				return err
			}
			if on {
				inBPF += rt1 - rt0
				withConnects += res.Requests
			}
			if res.Errors > 0 {
				return fmt.Errorf("connect loop: %d errors, first: %s", res.Errors, res.FirstErr)
			}
			perCPU := 0.0
			if cpu > 0 {
				perCPU = float64(res.Requests) / cpu.Seconds()
			}
			if on {
				with, withCPU = append(with, res.Rate()), append(withCPU, perCPU)
			} else {
				without, withoutCPU = append(without, res.Rate()), append(withoutCPU, perCPU)
			}
		}
	}
	b.res.connectWith, b.res.connectWithout = median(with), median(without)
	b.res.connectWithCPU, b.res.connectWithoutCPU = median(withCPU), median(withoutCPU)
	if withConnects > 0 {
		b.res.bpfPerConnect = inBPF / time.Duration(withConnects)
	}
	fmt.Fprintf(b.out, "connect(): %.0f/s with our programs, %.0f/s without; per CPU-second %.0f with, %.0f without; %v in our programs per connect\n",
		b.res.connectWith, b.res.connectWithout, b.res.connectWithCPU, b.res.connectWithoutCPU, b.res.bpfPerConnect)
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

func (b *bench) cleanup() {
	b.stopAgent()
	if b.nginx != nil {
		stopProcess(b.nginx, syscall.SIGQUIT) // graceful: workers finish first
	}
	if b.relay != nil {
		stopProcess(b.relay, syscall.SIGTERM)
	}
	if b.host != nil {
		b.host.Close()
	}
	for _, f := range []*os.File{b.fdBench, b.fdPlain} {
		if f != nil {
			f.Close()
		}
	}
	var removed []string
	for _, cg := range []string{b.cgBench, b.cgPlain} {
		if cg == "" {
			continue
		}
		// The generators have exited; an empty cgroup can go.
		for i := 0; i < 100; i++ {
			if err := os.Remove(cg); err == nil || errors.Is(err, os.ErrNotExist) {
				removed = append(removed, cg)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(removed) > 0 {
		fmt.Fprintf(b.out, "cgroups removed: %s\n", strings.Join(removed, " "))
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// describeMachine says what the numbers were measured on.
func describeMachine(ctx context.Context) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	ngx := "nginx not used"
	if p, err := nginxPath(); err == nil {
		if out, err := exec.CommandContext(ctx, p, "-v").CombinedOutput(); err == nil {
			ngx = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
		}
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s, %s", runtime.NumCPU(), cpu, kernel, runtime.Version(), ngx)
}

// profileAgent saves a CPU profile of the agent (a gpa_pprof build) taken
// while 8 keep-alive clients load it.
func (b *bench) profileAgent(ctx context.Context) error {
	const seconds = 8
	type answer struct {
		body []byte
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		c := &http.Client{Timeout: (seconds + 10) * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:6060/debug/pprof/profile?seconds=%d", seconds))
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("pprof: %s", resp.Status)
		}
		ch <- answer{body, err}
	}()
	spec := &loadSpec{Mode: "http", Addr: msp.IMDSAddr.String(), Host: msp.IMDSAddr.Addr().String(), Path: imdsPath,
		Clients: 8, NewConn: b.o.profileNewConn, Duration: (seconds + 1) * time.Second}
	if _, _, err := b.runGenerator(ctx, spec, b.fdBench); err != nil {
		return err
	}
	b.host.ResetRequests()
	a := <-ch
	if a.err != nil {
		return fmt.Errorf("agent profile (was the agent built with -tags gpa_pprof?): %w", a.err)
	}
	if err := os.WriteFile(b.o.cpuProfile, a.body, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "agent CPU profile: %s (go tool pprof -top %s)\n", b.o.cpuProfile, b.o.cpuProfile)
	return nil
}
