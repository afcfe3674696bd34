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

func project(rep *Report) []string {
	out := make([]string, len(rep.Rows))
	for i, r := range rep.Rows {
		out[i] = r.Check + " " + r.Result()
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
	runner CommandRunner
	svc    fakeServices
	ver    func() (OSVersion, error)
	// listen is the listener's answer; nil means it is down.
	listen *status.ProvisionState
	// offline reads the tree as a disk that is not running: no listener,
	// no service manager, no commands.
	offline bool
	// prepare changes the copied tree before the run.
	prepare func(t *testing.T, root string)
	want    []string
	// actions maps a check to a substring its action must contain;
	// findings maps a check to a substring its finding must contain, and
	// not maps a check to a substring its finding must not contain.
	actions, findings, not map[string]string
	// cause is the verdict's check, "" when nothing fails.
	cause string
}

// slowRunner answers systemctl like unitState("active") and lets
// cloud-init --version run into its deadline, recording how long it had.
type slowRunner struct {
	mu     sync.Mutex
	budget time.Duration
}

func (s *slowRunner) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	if name != "cloud-init" {
		return unitState("active").Output(ctx, name, args...)
	}
	if d, set := ctx.Deadline(); set {
		s.mu.Lock()
		s.budget = time.Until(d)
		s.mu.Unlock()
	}
	return nil, fmt.Errorf("signal: killed: %w", context.DeadlineExceeded)
}

var offlineRows = map[string]string{"kernel": "WARN", "cgroup2.filesystem": "WARN", "cgroup2.mount": "WARN", "btf": "WARN",
	"agent.service": "WARN", "agent.process": "WARN", "agent.listener": "WARN", "status.timestamp": "WARN"}

var failedEBPFWin = &status.ProvisionState{Finished: true, ErrorMessage: "ebpfProgramStatus - Failed to start redirector: Failed to get eBPF API: EbpfApi.dll is not loaded\r\n"}

// The fixtures are named after the guide's situations.
func fixtures() []fixture {
	return []fixture{{
		name: "linux healthy", tree: "linux-healthy", runner: unitState("active"), listen: provisioned,
		want: linuxRows(nil),
	}, {
		name: "linux failure to load eBPF: kernel older than 5.15, no BTF", tree: "linux-old-kernel", runner: unitState("active"), listen: failedEBPF,
		want: linuxRows(map[string]string{"kernel": "FAIL", "btf": "SKIP", "agent.listener": "SKIP", "provisioning": "SKIP", "status.proxyAgentStatus": "SKIP",
			"status.ebpfProgramStatus": "SKIP", "provisioning.tag": "SKIP"}),
		actions:  map[string]string{"kernel": "uname -r; opt out of MSP (proxyAgentSettings.enabled=false), upgrade the OS image or kernel to 5.15 or later"},
		findings: map[string]string{"btf": "skipped: follows from the kernel failure", "provisioning": "row 4"},
		cause:    "kernel",
	}, {
		name: "linux failure to attach cgroup for redirection: cgroup v2 not mounted", tree: "linux-no-cgroup2", runner: unitState("active"), listen: failedEBPF,
		want: linuxRows(map[string]string{"cgroup2.mount": "FAIL", "agent.listener": "SKIP", "provisioning": "SKIP", "status.proxyAgentStatus": "SKIP",
			"status.ebpfProgramStatus": "SKIP", "provisioning.tag": "SKIP"}),
		actions: map[string]string{"cgroup2.mount": `mount | grep cgroup2; if nothing is listed: sudo grubby --update-kernel=ALL --args="systemd.unified_cgroup_hierarchy=1"`},
		cause:   "cgroup2.mount",
	}, {
		name: "linux failure to acquire a key", tree: "linux-key-failure", runner: unitState("active"), listen: failedKey,
		want:     linuxRows(map[string]string{"agent.listener": "SKIP", "provisioning": "SKIP", "status.keyLatchStatus": "FAIL", "provisioning.tag": "SKIP"}),
		actions:  map[string]string{"status.keyLatchStatus": "msp-keyreset"},
		findings: map[string]string{"provisioning": "cloud-init reports the GPA unhealthy"},
		cause:    "status.keyLatchStatus",
	}, {
		name: "linux MSP enabled but not applied: MSP disabled in the VM model", tree: "linux-msp-disabled", runner: unitState("active"), listen: provisioned,
		want:    linuxRows(map[string]string{"status.keyLatchStatus": "WARN"}),
		actions: map[string]string{"status.keyLatchStatus": "proxyAgentSettings.enabled"},
	}, {
		name: "linux GPA missing, cloud-init 24.3 or later (table row 2)", tree: "linux-no-gpa-new-cloudinit", runner: unitState("inactive"),
		want: linuxRows(merge(noStatus, map[string]string{"agent.binary": "FAIL", "agent.unit": "SKIP", "agent.service": "SKIP",
			"agent.process": "SKIP", "agent.listener": "SKIP", "provisioning": "SKIP", "status.file": "SKIP", "status.file.mode": "SKIP",
			"provisioning.tag": "SKIP", "keys.folder": "SKIP"})),
		actions:  map[string]string{"agent.binary": "Microsoft.CPlat.ProxyAgent.ProxyAgentLinux"},
		findings: map[string]string{"provisioning": "azure-proxy-agent is not found (the guide's provisioning table, row 2)"},
		cause:    "agent.binary",
	}, {
		name: "linux GPA missing, cloud-init older than 24.3 (table row 1)", tree: "linux-no-gpa-old-cloudinit", runner: &fakeRunner{},
		want: linuxRows(merge(noStatus, map[string]string{"agent.binary": "FAIL", "agent.unit": "SKIP", "agent.service": "SKIP",
			"agent.process": "SKIP", "agent.listener": "SKIP", "cloud-init": "WARN", "provisioning": "SKIP", "status.file": "SKIP",
			"status.file.mode": "SKIP", "provisioning.tag": "SKIP", "keys.folder": "SKIP"})),
		actions:  map[string]string{"agent.binary": "Microsoft.CPlat.ProxyAgent.ProxyAgentLinux"},
		findings: map[string]string{"provisioning": "Linux.OSProvisioningInternalError"},
		cause:    "agent.binary",
	}, {
		name: "linux GPA installed, cloud-init older than 24.3 (table row 3)", tree: "linux-gpa-old-cloudinit", runner: unitState("active"), listen: provisioned,
		want:     linuxRows(map[string]string{"cloud-init": "WARN", "provisioning": "FAIL"}),
		actions:  map[string]string{"provisioning": "upgrade cloud-init to 24.3"},
		findings: map[string]string{"provisioning": "Linux.OSProvisioningInternalError, up to 100% of the time (the guide's provisioning table, row 3)"},
		cause:    "provisioning",
	}, {
		name: "linux GPA is not running, status stale", tree: "linux-agent-stopped", runner: unitState("failed"),
		want: linuxRows(map[string]string{"agent.service": "FAIL", "agent.process": "SKIP", "agent.listener": "SKIP", "provisioning": "SKIP",
			"status.timestamp": "SKIP"}),
		actions: map[string]string{"agent.service": "systemctl start azure-proxy-agent"},
		cause:   "agent.service",
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
		cause:   "status.file.mode",
	}, {
		name: "linux offline disk of a healthy VM", tree: "linux-offline-healthy", offline: true,
		want:     linuxRows(offlineRows),
		findings: map[string]string{"kernel": notChecked, "btf": notChecked, "cgroup2.mount": notChecked, "agent.process": notChecked, "status.timestamp": "2026-10-02T08:14:05Z"},
	}, {
		name: "linux cloud-init version unknown: no version file, cloud-init --version too slow", tree: "linux-unknown-cloudinit", runner: &slowRunner{}, listen: provisioned,
		want:     linuxRows(map[string]string{"cloud-init": "WARN", "provisioning": "WARN"}),
		actions:  map[string]string{"cloud-init": "cloud-init --version", "provisioning": "cloud-init --version"},
		findings: map[string]string{"cloud-init": "version is unknown", "provisioning": "unknown"},
		not:      map[string]string{"provisioning": "older than 24.3", "cloud-init": "not MSP-aware"},
	}, {
		name: "windows healthy", tree: "windows-healthy", os: "windows", svc: allRunning(), ver: osVersion(10, 20348, true), listen: provisioned,
		want: windowsRows(nil),
	}, {
		name: "windows eBPF setup failure: eBPFCore stopped", tree: "windows-healthy", os: "windows", ver: osVersion(10, 20348, true), listen: provisioned,
		svc: func() fakeServices {
			s := allRunning()
			s["eBPFCore"] = ServiceStatus{State: "STOPPED", StartType: "SYSTEM_START", Win32ExitCode: 1067}
			return s
		}(),
		want:    windowsRows(map[string]string{"service.eBPFCore": "FAIL"}),
		actions: map[string]string{"service.eBPFCore": "sc query eBPFCore must show STATE: 4 RUNNING", "deployment": "retry transient failures"},
		cause:   "service.eBPFCore",
	}, {
		name: "windows GPA missing: NetEbpfExt not installed", tree: "windows-healthy", os: "windows", ver: osVersion(10, 26100, false), listen: provisioned,
		svc: func() fakeServices {
			s := allRunning()
			delete(s, "NetEbpfExt")
			return s
		}(),
		want:    windowsRows(map[string]string{"service.NetEbpfExt": "FAIL"}),
		actions: map[string]string{"service.NetEbpfExt": "ProxyAgentWindows"},
		cause:   "service.NetEbpfExt",
	}, {
		name: "windows eBPF setup failure: eBPF API missing (EbpfApi.dll is not loaded)", tree: "windows-ebpf-api-missing", os: "windows", svc: allRunning(),
		ver: osVersion(10, 20348, true), listen: failedEBPFWin,
		want:    windowsRows(map[string]string{"agent.listener": "SKIP", "status.proxyAgentStatus": "SKIP", "status.ebpfProgramStatus": "FAIL"}),
		actions: map[string]string{"status.ebpfProgramStatus": "sc query eBPFCore and sc query NetEbpfExt must show STATE: 4 RUNNING; start a stopped one with sc start eBPFCore"},
		not:     map[string]string{"status.ebpfProgramStatus": "restart the agent"},
		cause:   "status.ebpfProgramStatus",
	}, {
		name: "windows eBPF API missing, read offline", tree: "windows-ebpf-api-missing", os: "windows", offline: true,
		want: windowsRows(map[string]string{"os.version": "WARN", "service.GuestProxyAgent": "WARN", "service.eBPFCore": "WARN", "service.NetEbpfExt": "WARN",
			"agent.listener": "WARN", "status.timestamp": "WARN", "status.proxyAgentStatus": "SKIP", "status.ebpfProgramStatus": "FAIL"}),
		actions: map[string]string{"status.ebpfProgramStatus": "eBPFCore and NetEbpfExt RUNNING"},
		cause:   "status.ebpfProgramStatus",
	}, {
		name: "windows failure to acquire a key", tree: "windows-key-failure", os: "windows", svc: allRunning(), ver: osVersion(10, 17763, true), listen: failedKey,
		want:    windowsRows(map[string]string{"agent.listener": "SKIP", "status.proxyAgentStatus": "SKIP", "status.keyLatchStatus": "FAIL"}),
		actions: map[string]string{"status.keyLatchStatus": "msp-keyreset"},
		cause:   "status.keyLatchStatus",
	}, {
		name: "windows unsupported OS version: Server 2016", tree: "windows-healthy", os: "windows", svc: allRunning(), ver: osVersion(10, 14393, true), listen: provisioned,
		want:    windowsRows(map[string]string{"os.version": "FAIL"}),
		actions: map[string]string{"os.version": "Windows Server 2019"},
		cause:   "os.version",
	}, {
		name: "windows unsupported OS version: 8.1, GPA not running", tree: "windows-healthy", os: "windows", ver: osVersion(6, 9600, false),
		svc: func() fakeServices {
			s := allRunning()
			s["GuestProxyAgent"] = ServiceStatus{State: "STOPPED", StartType: "DISABLED"}
			return s
		}(),
		want:  windowsRows(map[string]string{"os.version": "FAIL", "service.GuestProxyAgent": "SKIP", "agent.listener": "SKIP"}),
		cause: "os.version",
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
	e := &Env{OS: "linux", Root: os.DirFS(root), Now: fixtureNow, Version: f.ver, Runner: f.runner}
	if f.svc != nil {
		e.Services = f.svc
	}
	if !f.offline {
		e.AgentAddr = listener(t, f.listen)
	}
	if f.os != "" {
		e.OS = f.os
	}
	return e
}

// readOnlyCommands are the only commands the validator may run.
var readOnlyCommands = []string{"systemctl is-active azure-proxy-agent.service", "systemctl show --property MainPID --value azure-proxy-agent.service", "cloud-init --version"}

func TestValidateFixtures(t *testing.T) {
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			e := f.env(t)
			rep := Validate(context.Background(), e)
			installed := len(installedPaths(e, agentBinary)) > 0
			if diff := cmp.Diff(f.want, project(rep)); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			for _, r := range rep.Rows {
				if want, set := f.actions[r.Check]; set && !strings.Contains(r.Action, want) {
					t.Errorf("%s: action %q does not contain %q", r.Check, r.Action, want)
				}
				if want, set := f.findings[r.Check]; set && !strings.Contains(r.Message, want) {
					t.Errorf("%s: finding %q does not contain %q", r.Check, r.Message, want)
				}
				if bad, set := f.not[r.Check]; set && (strings.Contains(r.Message, bad) || strings.Contains(r.Action, bad)) {
					t.Errorf("%s: %q / %q says %q", r.Check, r.Message, r.Action, bad)
				}
				if (r.Severity == ok || r.Skipped()) != (r.Action == "") {
					t.Errorf("%s is %v with action %q: OK and skipped rows have none, others one", r.Check, r.Result(), r.Action)
				}
				if r.Skipped() != strings.HasPrefix(r.Message, "skipped: ") {
					t.Errorf("%s is %s with finding %q", r.Check, r.Result(), r.Message)
				}
				if strings.Contains(r.Message, "fixture: not a key") {
					t.Errorf("%s quotes a key file: %s", r.Check, r.Message)
				}
				if strings.Contains(r.Action, "systemctl start") && !installed {
					t.Errorf("%s tells to start an agent that is not installed: %s", r.Check, r.Action)
				}
			}
			var fails []string
			for _, r := range rep.Rows {
				if r.Result() == "FAIL" {
					fails = append(fails, r.Check)
				}
			}
			var got string
			if len(rep.Causes) > 0 {
				got = rep.Causes[0].Check
			}
			if got != f.cause {
				t.Errorf("verdict names %q, want %q", got, f.cause)
			}
			if f.cause != "" && len(fails) != len(rep.Causes) {
				t.Errorf("FAIL rows %q, but causes %d: one cause, one FAIL", fails, len(rep.Causes))
			}
			if r, isFake := f.runner.(*fakeRunner); isFake {
				for _, c := range r.calls {
					if !slices.Contains(readOnlyCommands, c) {
						t.Errorf("validator ran %q", c)
					}
				}
			}
			if r, isSlow := f.runner.(*slowRunner); isSlow && r.budget < 2*time.Second {
				t.Errorf("cloud-init --version had %v; it takes seconds on a cold cache", r.budget)
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
	rep := Validate(context.Background(), f.env(t))
	got := map[string]string{}
	for _, r := range rep.Rows {
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
	row, ci := checkCloudInit(context.Background(), &Env{Root: os.DirFS(root), Runner: r})
	if !ci.found || !ci.known || ci.v != (version{24, 1}) || row.Severity != warn {
		t.Errorf("checkCloudInit = %+v, %+v; want WARN for 24.1", row, ci)
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
}

// The CLI: exit codes, JSON, usage errors, and the loopback-only listener.
func TestRun(t *testing.T) {
	fixed := deps{now: func() time.Time { return fixtureNow }}
	healthy := copyTree(t, "linux-healthy")
	stale := copyTree(t, "linux-agent-stopped")
	offline := copyTree(t, "linux-offline-healthy")
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
		{"stale tree", []string{"--root", stale}, exitFail, `(?m)^VERDICT: FAIL agent\.process: no process runs /usr/sbin/azure-proxy-agent\n(.|\n)*status\.timestamp\s+SKIP\s+skipped: `},
		{"windows on a linux tree", []string{"--root", healthy, "--os", "windows"}, exitFail, `status\.file\s+FAIL`},
		// A mounted OS disk of a healthy VM: what needs the running VM is
		// not checked, and nothing fails.
		{"offline disk healthy", []string{"--root", offline}, exitOK, `(?m)^VERDICT: OK, no check failed; 8 checks need the running VM \(offline disk\)\n`},
		{"offline disk healthy, wide", []string{"--root", offline, "--wide"}, exitOK, `(?m)^btf\s+WARN\s+not checked \(offline: run on the VM\)\s+run msp-validate on the running VM`},
		{"wide keeps one line per check", []string{"--root", stale, "--wide"}, exitFail, `(?m)^CHECK\s+RESULT\s+FINDING\s+ACTION\n(.|\n)*^agent\.process\s+FAIL\s+no process runs /usr/sbin/azure-proxy-agent\s+systemctl start`},
		{"-h", []string{"-h"}, exitOK, `(?s)^usage: msp-validate .*Examples:.*-wide`},
		{"--help", []string{"--help"}, exitOK, `^usage: msp-validate `},
		{"help", []string{"help"}, exitOK, `^usage: msp-validate `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, fixed)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, stderr.String())
			}
			if tt.wantCode == exitOK && stderr.Len() > 0 {
				t.Errorf("stderr is not empty: %s", stderr.String())
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
			OS, Root, Result string
			Cause            struct{ Check, Result, Finding, Action string }
			Checks           []struct{ Check, Result, Finding, Action, Cause string }
		}
		dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rep); err != nil {
			t.Fatal(err)
		}
		if rep.OS != "linux" || rep.Result != "FAIL" || len(rep.Checks) != len(linuxRows(nil)) || rep.Checks[0].Check != "kernel" {
			t.Errorf("report = %+v", rep)
		}
		if rep.Cause.Check != "agent.process" || rep.Cause.Result != "FAIL" || rep.Cause.Action == "" {
			t.Errorf("cause = %+v, want the agent.process FAIL with its action", rep.Cause)
		}
		i := slices.IndexFunc(rep.Checks, func(c struct{ Check, Result, Finding, Action, Cause string }) bool {
			return c.Check == "status.timestamp"
		})
		if c := rep.Checks[i]; c.Result != "SKIP" || c.Cause != "agent.process" || c.Action != "" {
			t.Errorf("status.timestamp = %+v, want SKIP caused by agent.process", c)
		}
	})
}

// The README's tables come from these fixtures; -update rewrites them.
func TestGoldenTables(t *testing.T) {
	for _, g := range []struct{ fixture, golden string }{
		{"linux failure to acquire a key", "linux-key-failure.golden"},
		{"windows eBPF setup failure: eBPFCore stopped", "windows-ebpfcore-stopped.golden"},
		{"linux offline disk of a healthy VM", "linux-offline-healthy.golden"},
	} {
		t.Run(g.golden, func(t *testing.T) {
			i := slices.IndexFunc(fixtures(), func(f fixture) bool { return f.name == g.fixture })
			var buf bytes.Buffer
			must(t, writeTable(&buf, Validate(context.Background(), fixtures()[i].env(t)), tableWidth))
			path := filepath.Join("testdata", g.golden)
			if *update {
				must(t, os.WriteFile(path, buf.Bytes(), 0o644))
			}
			want, err := os.ReadFile(path)
			must(t, err)
			for l := range strings.Lines(buf.String()) {
				if n := len([]rune(strings.TrimSuffix(l, "\n"))); n > tableWidth {
					t.Errorf("a line of %d columns does not fit %d: %s", n, tableWidth, l)
				}
			}
			if diff := cmp.Diff(string(want), buf.String()); diff != "" {
				t.Errorf("table (-golden +got):\n%s", diff)
			}
			for _, doc := range []string{"README.md", "../../README.md"} {
				readme, err := os.ReadFile(doc)
				must(t, err)
				if doc == "README.md" || g.golden != "linux-offline-healthy.golden" {
					if !bytes.Contains(readme, want) {
						t.Errorf("%s does not show testdata/%s; paste it in", doc, g.golden)
					}
				}
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
		if rep := Validate(context.Background(), e); len(rep.Rows) == 0 {
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
		{nil, "WARN not checked (offline: run on the VM)"},
	} {
		if got := svc(tt.q); !strings.HasPrefix(got, tt.want) {
			t.Errorf("got %q, want prefix %q", got, tt.want)
		}
	}
}

// agent.process is the unit's MainPID or a process running the installed
// binary, never any process that happens to be named azure-proxy-agent.
func TestAgentProcessIsTheInstalledBinary(t *testing.T) {
	tests := []struct {
		name    string
		runner  *fakeRunner
		prepare func(t *testing.T, proc string)
		want    string
	}{
		{"argv[0] is the installed binary", unitState("active"), func(*testing.T, string) {}, "OK azure-proxy-agent runs (pid 812)"},
		{"only a copy in /tmp runs", unitState("active"), func(t *testing.T, proc string) {
			must(t, os.WriteFile(filepath.Join(proc, "812/cmdline"), []byte("/tmp/build/azure-proxy-agent\x00--debug\x00"), 0o644))
		}, "FAIL no process runs /usr/sbin/azure-proxy-agent (pid 812 is named azure-proxy-agent but runs another binary)"},
		{"the executable link names the installed binary", unitState("active"), func(t *testing.T, proc string) {
			must(t, os.WriteFile(filepath.Join(proc, "812/cmdline"), []byte("azure-proxy-agent\x00"), 0o644))
			must(t, os.Symlink("/usr/sbin/azure-proxy-agent", filepath.Join(proc, "812/exe")))
		}, "OK azure-proxy-agent runs (pid 812)"},
		{"the unit's MainPID", &fakeRunner{out: map[string]string{
			"systemctl is-active azure-proxy-agent.service":                       "active",
			"systemctl show --property MainPID --value azure-proxy-agent.service": "640",
		}}, func(*testing.T, string) {}, "OK azure-proxy-agent runs (pid 640, the unit's MainPID)"},
		{"a MainPID that is gone", &fakeRunner{out: map[string]string{
			"systemctl show --property MainPID --value azure-proxy-agent.service": "4040671",
		}}, func(t *testing.T, proc string) { must(t, os.RemoveAll(filepath.Join(proc, "812"))) }, "FAIL no process runs /usr/sbin/azure-proxy-agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := copyTree(t, "linux-healthy")
			tt.prepare(t, filepath.Join(root, "proc"))
			r := checkProcess(context.Background(), &Env{Root: os.DirFS(root), Runner: tt.runner})
			if got := r.Severity.String() + " " + r.Message; got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// Upstream's Windows redirector errors that mean the eBPF runtime is
// missing or stopped get the guide's eBPF setup action; other failures
// keep status.Diagnose's.
func TestWindowsEBPFSetupFailures(t *testing.T) {
	tests := []struct {
		msg  string
		ebpf bool
	}{
		{"Failed to get eBPF API: EbpfApi.dll is not loaded", true},
		{"Failed to start redirector: Failed to get eBPF API: API is not loaded", true},
		{`Loading eBPF API from file path 'C:\Windows\System32\EbpfApi.dll' failed with error: LoadLibraryExW failed`, true},
		{"Loading BPF API function 'bpf_object__open' failed with error: GetProcAddress failed", true},
		{`Loading BPF object from file path 'C:\Program Files\GuestProxyAgent\redirect.bpf.sys' failed with error: -2`, true},
		{"Failed to attach program 'authorize_v4' with error: -1", true},
		{"Failed to start eBPF/redirector with multiple retries", true},
		{"Failed to start redirector: Failed to update HashMap 'policy_map' for 'IMDS endpoints' with error: -1", true},
		{"Failed to bind TcpListener '127.0.0.1:3080'", false},
	}
	for _, tt := range tests {
		f := status.Finding{Check: "status.ebpfProgramStatus", Severity: fail, Message: "STOPPED: " + tt.msg, Action: "restart"}
		got := windowsEBPFSetup(f).Action == actionEBPFServices
		if got != tt.ebpf {
			t.Errorf("%q: eBPF setup action %v, want %v", tt.msg, got, tt.ebpf)
		}
	}
}

// Where cloud-init's version comes from when its version module is not at a
// known path: the package metadata folder, dpkg's database, the command; and
// an unknown version is a WARN that says how to find it, never the race of
// the guide's row 3.
func TestCloudInitVersionSources(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, root string)
		runner  CommandRunner
		want    string
	}{
		{"pip metadata folder", func(t *testing.T, root string) {
			must(t, os.MkdirAll(filepath.Join(root, "usr/lib/python3.12/site-packages/cloud_init-24.4.1.dist-info"), 0o755))
		}, nil, "OK cloud-init 24.4.1 is MSP-aware (24.3 or later)"},
		{"egg metadata folder", func(t *testing.T, root string) {
			must(t, os.MkdirAll(filepath.Join(root, "usr/lib/python3.9/site-packages/cloud_init-23.4-py3.9.egg-info"), 0o755))
		}, nil, "WARN cloud-init 23.4 is not MSP-aware (24.3 or later is)"},
		{"dpkg database", func(t *testing.T, root string) {
			must(t, os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755))
			must(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(
				"Package: cloud-guest-utils\nStatus: install ok installed\nVersion: 0.33\n\n"+
					"Package: cloud-init\nStatus: install ok installed\nVersion: 24.4-0ubuntu1~24.04.2\n"), 0o644))
		}, nil, "OK cloud-init 24.4-0ubuntu1~24.04.2 is MSP-aware (24.3 or later)"},
		{"slow cloud-init --version", func(*testing.T, string) {}, &slowRunner{},
			"WARN cloud-init is installed, its version is unknown (no version.py or package metadata under /usr/lib/python3*; cloud-init --version: signal: killed: context deadline exceeded)"},
		{"offline disk without version file", func(*testing.T, string) {}, nil,
			"WARN cloud-init is installed, its version is unknown (no version.py or package metadata under /usr/lib/python3*; cloud-init --version: " + errNotLive.Error() + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := copyTree(t, "linux-healthy")
			must(t, os.RemoveAll(filepath.Join(root, "usr/lib/python3")))
			tt.prepare(t, root)
			r, ci := checkCloudInit(context.Background(), &Env{Root: os.DirFS(root), Runner: tt.runner})
			if got := r.Severity.String() + " " + r.Message; got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			p := provisioningMatrix(true, ci, false)
			if !ci.known && (p.Severity != warn || strings.Contains(p.Message, "row 3") || !strings.Contains(p.Action, "cloud-init --version")) {
				t.Errorf("unknown version: provisioning = %+v, want a WARN saying how to find the version", p)
			}
		})
	}
}
