package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

var update = flag.Bool("update", false, "rewrite the golden tables in testdata")

// fixtureNow is the time the fixtures' status.json files are judged at;
// the fresh ones are dated 30 s before it.
var fixtureNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// fakeRunner answers commands from a table and records what was run, so
// tests can assert the validator runs nothing but the read-only queries.
type fakeRunner struct {
	mu    sync.Mutex
	out   map[string]string // command line -> stdout; missing: not found
	calls []string
}

func (f *fakeRunner) Output(_ context.Context, name string, args ...string) ([]byte, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	f.mu.Lock()
	f.calls = append(f.calls, cmd)
	f.mu.Unlock()
	out, found := f.out[cmd]
	if !found {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	if out != "active" && strings.HasPrefix(cmd, "systemctl is-active") {
		return []byte(out + "\n"), errors.New("exit status 3")
	}
	return []byte(out + "\n"), nil
}

func unitState(s string) *fakeRunner {
	return &fakeRunner{out: map[string]string{"systemctl is-active azure-proxy-agent.service": s}}
}

// fakeServices is a service manager holding the given services.
type fakeServices map[string]ServiceStatus

func (f fakeServices) QueryService(_ context.Context, name string) (ServiceStatus, error) {
	s, found := f[name]
	if !found {
		return ServiceStatus{}, fmt.Errorf("%s: %w", name, ErrServiceNotFound)
	}
	return s, nil
}

func allRunning() fakeServices {
	return fakeServices{
		"GuestProxyAgent": {State: "RUNNING", StartType: "AUTO_START"},
		"eBPFCore":        {State: "RUNNING", StartType: "SYSTEM_START"},
		"NetEbpfExt":      {State: "RUNNING", StartType: "SYSTEM_START"},
	}
}

func osVersion(major, build uint32, server bool) func() (OSVersion, error) {
	return func() (OSVersion, error) { return OSVersion{Major: major, Build: build, Server: server}, nil }
}

// listener starts a loopback stand-in for the agent's /provision and
// returns its host:port. It fails the test if the validator sends the
// notify header or leaves out the headers --status sends. With state nil
// the listener is down: the port is closed again at once.
func listener(t *testing.T, state *status.ProvisionState) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != msp.ProvisionPath || r.Method != http.MethodGet:
			t.Errorf("validator sent %s %s", r.Method, r.URL)
		case r.Header.Get(status.HeaderNotify) != "":
			t.Errorf("validator sent %s: it must not wake the key latch", status.HeaderNotify)
		case r.Header.Get(status.HeaderMetadata) == "" || r.Header.Get(status.HeaderTimeTick) != "0":
			t.Errorf("validator sent headers %v", r.Header)
		}
		_ = json.NewEncoder(w).Encode(state)
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	if state == nil {
		srv.Close()
	} else {
		t.Cleanup(srv.Close)
	}
	return addr
}

var (
	provisioned = &status.ProvisionState{Finished: true}
	failedEBPF  = &status.ProvisionState{Finished: true, ErrorMessage: "ebpfProgramStatus - Failed to start redirector: Failed to load program 'connect4'\r\n"}
	failedKey   = &status.ProvisionState{Finished: true, ErrorMessage: "keyLatchStatus - Failed to acquire key details: Key(KeyResponse(\"acquire\", 500))\r\n"}
)

// copyTree copies testdata/name into a temporary folder and gives its files
// the modes the agent sets, which git does not keep.
func copyTree(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", name)
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]fs.FileMode{
		"usr/sbin/azure-proxy-agent":                                              0o755,
		"usr/bin/cloud-init":                                                      0o755,
		"var/log/azure-proxy-agent/status.json":                                   0o640,
		"var/lib/azure-proxy-agent/keys":                                          0o700,
		"var/lib/azure-proxy-agent/keys/status.tag":                               0o600,
		"var/lib/azure-proxy-agent/keys/provisioned.tag":                          0o600,
		"var/lib/azure-proxy-agent/keys/5f8f3d8a-8b2b-4e0a-9c3e-2a1d6f7b9c01.key": 0o600,
	} {
		if err := os.Chmod(filepath.Join(dst, p), mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return dst
}

// linuxRows is the table of a healthy Linux VM, as "check RESULT" lines,
// with changes applied: a RESULT of "-" drops the row.
func linuxRows(changes map[string]string) []string {
	base := []string{"kernel", "cgroup2.filesystem", "cgroup2.mount", "btf", "agent.binary", "agent.unit",
		"agent.service", "agent.process", "agent.listener", "cloud-init", "provisioning", "status.file",
		"status.timestamp", "status.proxyAgentStatus", "status.keyLatchStatus", "status.ebpfProgramStatus",
		"status.proxyListenerStatus", "status.file.mode", "provisioning.tag", "keys.folder", "keys.files"}
	return apply(base, changes)
}

func windowsRows(changes map[string]string) []string {
	base := []string{"os.version", "service.GuestProxyAgent", "service.eBPFCore", "service.NetEbpfExt", "agent.listener",
		"status.file", "status.timestamp", "status.proxyAgentStatus", "status.keyLatchStatus", "status.ebpfProgramStatus",
		"status.proxyListenerStatus"}
	if slices.Contains(mapsValues(changes), "FAIL") {
		base = append(base, "deployment")
		if _, set := changes["deployment"]; !set {
			changes["deployment"] = "WARN"
		}
	}
	return apply(base, changes)
}

func mapsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func apply(base []string, changes map[string]string) []string {
	var out []string
	for _, c := range base {
		r := "OK"
		if v, set := changes[c]; set {
			r = v
		}
		if r != "-" {
			out = append(out, c+" "+r)
		}
	}
	return out
}

func project(rows []status.Finding) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Check + " " + r.Severity.String()
	}
	return out
}

var noStatus = map[string]string{"status.file": "FAIL", "status.timestamp": "-", "status.proxyAgentStatus": "-", "status.keyLatchStatus": "-",
	"status.ebpfProgramStatus": "-", "status.proxyListenerStatus": "-", "status.file.mode": "WARN", "provisioning.tag": "WARN", "keys.folder": "WARN", "keys.files": "-"}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

type fixture struct {
	name   string
	tree   string
	os     string
	runner *fakeRunner
	svc    fakeServices
	ver    func() (OSVersion, error)
	// listen is the listener's answer; nil means it is down.
	listen *status.ProvisionState
	// prepare changes the copied tree before the run.
	prepare func(t *testing.T, root string)
	want    []string
	// actions maps a check to a substring its action must contain.
	actions map[string]string
}

func fixtures() []fixture {
	return []fixture{{
		name: "linux healthy", tree: "linux-healthy", runner: unitState("active"), listen: provisioned,
		want: linuxRows(nil),
	}, {
		name: "linux kernel too old, no BTF: eBPF load failure", tree: "linux-old-kernel", runner: unitState("active"), listen: failedEBPF,
		want: linuxRows(map[string]string{"kernel": "FAIL", "btf": "FAIL", "agent.listener": "FAIL", "status.proxyAgentStatus": "FAIL",
			"status.ebpfProgramStatus": "FAIL", "provisioning.tag": "FAIL"}),
		actions: map[string]string{"kernel": "5.15", "status.ebpfProgramStatus": "kernel", "provisioning.tag": "ebpf-load"},
	}, {
		name: "linux cgroup v2 not mounted: attach failure", tree: "linux-no-cgroup2", runner: unitState("active"), listen: failedEBPF,
		want: linuxRows(map[string]string{"cgroup2.mount": "FAIL", "agent.listener": "FAIL", "status.proxyAgentStatus": "FAIL",
			"status.ebpfProgramStatus": "FAIL", "provisioning.tag": "FAIL"}),
		actions: map[string]string{"cgroup2.mount": "grubby --update-kernel=ALL", "status.ebpfProgramStatus": "systemd.unified_cgroup_hierarchy=1"},
	}, {
		name: "linux key acquisition failure", tree: "linux-key-failure", runner: unitState("active"), listen: failedKey,
		want:    linuxRows(map[string]string{"agent.listener": "FAIL", "status.keyLatchStatus": "FAIL", "provisioning.tag": "FAIL"}),
		actions: map[string]string{"status.keyLatchStatus": "msp-keyreset", "provisioning.tag": "key-acquisition"},
	}, {
		name: "linux MSP disabled", tree: "linux-msp-disabled", runner: unitState("active"), listen: provisioned,
		want:    linuxRows(map[string]string{"status.keyLatchStatus": "WARN"}),
		actions: map[string]string{"status.keyLatchStatus": "proxyAgentSettings.enabled"},
	}, {
		name: "linux GPA missing, cloud-init 24.3 or later", tree: "linux-no-gpa-new-cloudinit", runner: unitState("inactive"),
		want: linuxRows(merge(noStatus, map[string]string{"agent.binary": "FAIL", "agent.unit": "FAIL", "agent.service": "FAIL",
			"agent.process": "FAIL", "agent.listener": "FAIL", "provisioning": "FAIL"})),
		actions: map[string]string{"provisioning": "install the azure-proxy-agent package"},
	}, {
		name: "linux GPA missing, cloud-init older than 24.3", tree: "linux-no-gpa-old-cloudinit", runner: &fakeRunner{},
		want: linuxRows(merge(noStatus, map[string]string{"agent.binary": "FAIL", "agent.unit": "FAIL", "agent.service": "WARN",
			"agent.process": "FAIL", "agent.listener": "FAIL", "cloud-init": "WARN", "provisioning": "FAIL"})),
		actions: map[string]string{"provisioning": "upgrade cloud-init"},
	}, {
		name: "linux GPA installed, cloud-init older than 24.3", tree: "linux-gpa-old-cloudinit", runner: unitState("active"), listen: provisioned,
		want:    linuxRows(map[string]string{"cloud-init": "WARN", "provisioning": "FAIL"}),
		actions: map[string]string{"provisioning": "upgrade cloud-init to 24.3"},
	}, {
		name: "linux agent stopped, status stale", tree: "linux-agent-stopped", runner: unitState("failed"),
		want:    linuxRows(map[string]string{"agent.service": "FAIL", "agent.process": "FAIL", "agent.listener": "FAIL", "status.timestamp": "FAIL"}),
		actions: map[string]string{"agent.service": "systemctl start azure-proxy-agent", "status.timestamp": "systemctl status"},
	}, {
		name: "linux key files and status file open to others", tree: "linux-healthy", runner: unitState("active"), listen: provisioned,
		prepare: func(t *testing.T, root string) {
			keys := filepath.Join(root, "var/lib/azure-proxy-agent/keys")
			must(t, os.Chmod(keys, 0o755))
			must(t, os.Chmod(filepath.Join(keys, "5f8f3d8a-8b2b-4e0a-9c3e-2a1d6f7b9c01.key"), 0o644))
			must(t, os.Chmod(filepath.Join(root, "var/log/azure-proxy-agent/status.json"), 0o666))
		},
		want:    linuxRows(map[string]string{"keys.folder": "FAIL", "keys.files": "FAIL", "status.file.mode": "FAIL"}),
		actions: map[string]string{"keys.folder": "chmod 0700", "keys.files": "msp-keyreset", "status.file.mode": "chmod 0640"},
	}, {
		name: "windows healthy", tree: "windows-healthy", os: "windows", svc: allRunning(), ver: osVersion(10, 20348, true), listen: provisioned,
		want: windowsRows(nil),
	}, {
		name: "windows eBPFCore stopped", tree: "windows-healthy", os: "windows", ver: osVersion(10, 20348, true), listen: provisioned,
		svc: func() fakeServices {
			s := allRunning()
			s["eBPFCore"] = ServiceStatus{State: "STOPPED", StartType: "SYSTEM_START", Win32ExitCode: 1067}
			return s
		}(),
		want:    windowsRows(map[string]string{"service.eBPFCore": "FAIL"}),
		actions: map[string]string{"service.eBPFCore": "sc query eBPFCore must show STATE: 4 RUNNING", "deployment": "retry transient failures"},
	}, {
		name: "windows NetEbpfExt missing", tree: "windows-healthy", os: "windows", ver: osVersion(10, 26100, false), listen: provisioned,
		svc: func() fakeServices {
			s := allRunning()
			delete(s, "NetEbpfExt")
			return s
		}(),
		want:    windowsRows(map[string]string{"service.NetEbpfExt": "FAIL"}),
		actions: map[string]string{"service.NetEbpfExt": "ProxyAgentWindows"},
	}, {
		name: "windows key acquisition failure", tree: "windows-key-failure", os: "windows", svc: allRunning(), ver: osVersion(10, 17763, true), listen: failedKey,
		want:    windowsRows(map[string]string{"agent.listener": "FAIL", "status.proxyAgentStatus": "FAIL", "status.keyLatchStatus": "FAIL"}),
		actions: map[string]string{"status.keyLatchStatus": "msp-keyreset"},
	}, {
		name: "windows server 2016 unsupported", tree: "windows-healthy", os: "windows", svc: allRunning(), ver: osVersion(10, 14393, true), listen: provisioned,
		want:    windowsRows(map[string]string{"os.version": "FAIL"}),
		actions: map[string]string{"os.version": "Windows Server 2019"},
	}, {
		name: "windows 8.1 unsupported, agent down", tree: "windows-healthy", os: "windows", ver: osVersion(6, 9600, false),
		svc: func() fakeServices {
			s := allRunning()
			s["GuestProxyAgent"] = ServiceStatus{State: "STOPPED", StartType: "DISABLED"}
			return s
		}(),
		want: windowsRows(map[string]string{"os.version": "FAIL", "service.GuestProxyAgent": "FAIL", "agent.listener": "FAIL"}),
	}}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f fixture) env(t *testing.T) *Env {
	root := copyTree(t, f.tree)
	if f.prepare != nil {
		f.prepare(t, root)
	}
	e := &Env{OS: "linux", Root: os.DirFS(root), Now: fixtureNow, AgentAddr: listener(t, f.listen), Services: f.svc, Version: f.ver}
	if f.runner != nil {
		e.Runner = f.runner
	}
	if f.os != "" {
		e.OS = f.os
	}
	return e
}

func TestValidateFixtures(t *testing.T) {
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			rows := Validate(context.Background(), f.env(t))
			if diff := cmp.Diff(f.want, project(rows)); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			for _, r := range rows {
				if want, set := f.actions[r.Check]; set && !strings.Contains(r.Action, want) {
					t.Errorf("%s: action %q does not contain %q", r.Check, r.Action, want)
				}
				if (r.Severity == ok) != (r.Action == "") {
					t.Errorf("%s is %v with action %q: OK rows have none, others one", r.Check, r.Severity, r.Action)
				}
				if strings.Contains(r.Message, "fixture: not a key") {
					t.Errorf("%s quotes a key file: %s", r.Check, r.Message)
				}
			}
			if f.runner != nil {
				for _, c := range f.runner.calls {
					if c != "systemctl is-active azure-proxy-agent.service" && c != "cloud-init --version" {
						t.Errorf("validator ran %q", c)
					}
				}
			}
		})
	}
}

// A key folder owned by another user fails even with the right modes.
func TestKeyFolderOwner(t *testing.T) {
	testenv.MustBeRoot(t)
	f := fixtures()[0]
	f.prepare = func(t *testing.T, root string) {
		keys := filepath.Join(root, "var/lib/azure-proxy-agent/keys")
		must(t, os.Chown(keys, 65534, 65534))
		must(t, os.Chown(filepath.Join(keys, "provisioned.tag"), 65534, 0))
	}
	rows := Validate(context.Background(), f.env(t))
	got := map[string]string{}
	for _, r := range rows {
		got[r.Check] = r.Severity.String() + " " + r.Message
	}
	for _, c := range []string{"keys.folder", "keys.files"} {
		if !strings.HasPrefix(got[c], "FAIL") || !strings.Contains(got[c], "uid 65534") {
			t.Errorf("%s = %q, want a FAIL naming uid 65534", c, got[c])
		}
	}
}

// cloud-init --version is the fallback when the version module is not
// found; its output carries the packaging suffix.
func TestCloudInitVersionFromCommand(t *testing.T) {
	root := copyTree(t, "linux-healthy")
	must(t, os.RemoveAll(filepath.Join(root, "usr/lib/python3")))
	r := &fakeRunner{out: map[string]string{"cloud-init --version": "/usr/bin/cloud-init 24.1.3-0ubuntu3.3"}}
	row, v, found := checkCloudInit(context.Background(), &Env{Root: os.DirFS(root), Runner: r})
	if !found || v != (version{24, 1}) || row.Severity != warn {
		t.Errorf("checkCloudInit = %+v, %v, %v; want WARN for 24.1", row, v, found)
	}
	if !slices.Equal(r.calls, []string{"cloud-init --version"}) {
		t.Errorf("calls = %q", r.calls)
	}
}

func TestParseHelpers(t *testing.T) {
	tests := []struct {
		in   string
		want version
		ok   bool
	}{
		{"6.8.0-1015-azure", version{6, 8}, true},
		{"5.15.0", version{5, 15}, true},
		{"24.4-0ubuntu1~24.04.2", version{24, 4}, true},
		{" 23.1.1\n", version{23, 1}, true},
		{"@@PACKAGED_VERSION@@", version{}, false},
		{"6", version{}, false},
	}
	for _, tt := range tests {
		got, good := parseVersion(tt.in)
		if got != tt.want || good != tt.ok {
			t.Errorf("parseVersion(%q) = %v, %v; want %v, %v", tt.in, got, good, tt.want, tt.ok)
		}
	}
	mi := []byte("31 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n" +
		"40 22 0:30 / /mnt/my\\040cg rw shared:3 - cgroup2 none rw\n" +
		"41 22 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\nbroken line\n")
	if diff := cmp.Diff([]string{"/sys/fs/cgroup", "/mnt/my cg"}, cgroup2Mounts(mi)); diff != "" {
		t.Errorf("cgroup2Mounts (-want +got):\n%s", diff)
	}
}

// The CLI: exit codes, JSON, usage errors, and the loopback-only listener.
func TestRun(t *testing.T) {
	fixed := deps{now: func() time.Time { return fixtureNow }}
	healthy := copyTree(t, "linux-healthy")
	stale := copyTree(t, "linux-agent-stopped")
	addr := listener(t, provisioned)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"usage", []string{"--bogus"}, exitUsage, ""},
		{"extra argument", []string{"now"}, exitUsage, ""},
		{"bad os", []string{"--os", "plan9"}, exitUsage, ""},
		{"not loopback", []string{"--agent-addr", "169.254.169.254:80"}, exitUsage, ""},
		{"root missing", []string{"--root", filepath.Join(healthy, "nope")}, exitUsage, ""},
		// With --root the live queries are skipped: systemctl is a WARN.
		{"healthy tree", []string{"--root", healthy, "--agent-addr", addr}, exitOK, `agent\.service\s+WARN`},
		{"healthy tree json", []string{"--root", healthy, "--json", "--agent-addr", addr}, exitOK, `"result": "WARN"`},
		{"stale tree", []string{"--root", stale}, exitFail, `status\.timestamp\s+FAIL`},
		{"windows on a linux tree", []string{"--root", healthy, "--os", "windows"}, exitFail, `status\.file\s+FAIL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, fixed)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, stderr.String())
			}
			if !regexp.MustCompile(tt.wantOut).MatchString(stdout.String()) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, stdout.String())
			}
		})
	}
	t.Run("json document", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		run(context.Background(), []string{"--root", stale, "--json"}, &stdout, &stderr, fixed)
		var rep struct {
			OS, Result string
			Checks     []struct{ Check, Result, Finding, Action string }
		}
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.OS != "linux" || rep.Result != "FAIL" || len(rep.Checks) != len(linuxRows(nil)) || rep.Checks[0].Check != "kernel" {
			t.Errorf("report = %+v", rep)
		}
	})
}

// The README's tables come from these fixtures; -update rewrites them.
func TestGoldenTables(t *testing.T) {
	for _, g := range []struct{ fixture, golden string }{
		{"linux key acquisition failure", "linux-key-failure.golden"},
		{"windows eBPFCore stopped", "windows-ebpfcore-stopped.golden"},
	} {
		t.Run(g.golden, func(t *testing.T) {
			i := slices.IndexFunc(fixtures(), func(f fixture) bool { return f.name == g.fixture })
			var buf bytes.Buffer
			must(t, writeTable(&buf, Validate(context.Background(), fixtures()[i].env(t))))
			path := filepath.Join("testdata", g.golden)
			if *update {
				must(t, os.WriteFile(path, buf.Bytes(), 0o644))
			}
			want, err := os.ReadFile(path)
			must(t, err)
			if diff := cmp.Diff(string(want), buf.String()); diff != "" {
				t.Errorf("table (-golden +got):\n%s", diff)
			}
			readme, err := os.ReadFile("README.md")
			must(t, err)
			if !bytes.Contains(readme, want) {
				t.Errorf("README.md does not show testdata/%s; paste it in", g.golden)
			}
		})
	}
}

// The live run is read-only and quick; this measures it on this machine.
// The guide's goal is under a second.
func BenchmarkValidateLive(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("live Linux checks")
	}
	e := &Env{OS: "linux", Root: os.DirFS("/"), Now: time.Now(), AgentAddr: msp.ProxyAddr.String(), Runner: execRunner{}}
	for b.Loop() {
		if rows := Validate(context.Background(), e); len(rows) == 0 {
			b.Fatal("no rows")
		}
	}
}

// The checks alone, on a fixture tree with fakes, without process starts.
func BenchmarkValidateFixture(b *testing.B) {
	root := b.TempDir()
	mustB(b, os.CopyFS(root, os.DirFS(filepath.Join("testdata", "linux-healthy"))))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(provisioned)
	}))
	defer srv.Close()
	e := &Env{OS: "linux", Root: os.DirFS(root), Now: fixtureNow, AgentAddr: strings.TrimPrefix(srv.URL, "http://"), Runner: unitState("active")}
	for b.Loop() {
		Validate(context.Background(), e)
	}
}

func mustB(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// Every fixture tree in testdata is run by TestValidateFixtures.
func TestEveryTreeUsed(t *testing.T) {
	entries, err := os.ReadDir("testdata")
	must(t, err)
	used := map[string]bool{}
	for _, f := range fixtures() {
		used[f.tree] = true
	}
	for _, e := range entries {
		if e.IsDir() && !used[e.Name()] {
			t.Errorf("testdata/%s is not used by any fixture", e.Name())
		}
	}
}

func TestCheckListener(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"finished", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"finished":true,"errorMessage":""}`) }, "OK"},
		{"not finished", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, `{"finished":false,"errorMessage":"keyLatchStatus - x\r\n"}`)
		}, "WARN"},
		{"finished with errors", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, `{"finished":true,"errorMessage":"ebpfProgramStatus - a\r\nkeyLatchStatus - b\r\n"}`)
		}, "FAIL answers GET /provision: provisioning finished with errors: ebpfProgramStatus - a | keyLatchStatus - b"},
		{"another program on the port", func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) }, "FAIL GET /provision answered 404 Not Found"},
		{"not the agent", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>") }, "FAIL GET /provision answered something"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			r := checkListener(context.Background(), &Env{AgentAddr: strings.TrimPrefix(srv.URL, "http://")}, "restart")
			if got := r.Severity.String() + " " + r.Message; !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want prefix %q", got, tt.want)
			}
		})
	}
}

type deniedServices struct{}

func (deniedServices) QueryService(context.Context, string) (ServiceStatus, error) {
	return ServiceStatus{}, errors.New("Access is denied.")
}

func TestWindowsChecks(t *testing.T) {
	ver := func(major, build uint32, server bool) string {
		return checkWindowsVersion(&Env{Version: osVersion(major, build, server)}).Severity.String()
	}
	got := []string{ver(10, 17763, true), ver(10, 17762, true), ver(10, 10240, false), ver(6, 9600, false), ver(6, 9600, true)}
	if diff := cmp.Diff([]string{"OK", "FAIL", "OK", "FAIL", "FAIL"}, got); diff != "" {
		t.Errorf("version rows (-want +got):\n%s", diff)
	}
	svc := func(q ServiceQuerier) string {
		r := checkService(context.Background(), &Env{Services: q}, windowsServices[1])
		return r.Severity.String() + " " + r.Message
	}
	for _, tt := range []struct {
		q    ServiceQuerier
		want string
	}{
		{fakeServices{"eBPFCore": {State: "RUNNING", StartType: "DISABLED"}}, "WARN eBPFCore is RUNNING but its start type is DISABLED"},
		{fakeServices{"eBPFCore": {State: "START_PENDING", StartType: "SYSTEM_START"}}, "FAIL eBPFCore is START_PENDING"},
		{fakeServices{"eBPFCore": {State: "STOPPED", StartType: "SYSTEM_START", ServiceExitCode: 31}}, "FAIL eBPFCore is STOPPED (start type SYSTEM_START, exit code 0, service exit code 31)"},
		{deniedServices{}, "WARN cannot query eBPFCore: Access is denied."},
		{nil, "WARN cannot query services"},
	} {
		if got := svc(tt.q); !strings.HasPrefix(got, tt.want) {
			t.Errorf("got %q, want prefix %q", got, tt.want)
		}
	}
}
