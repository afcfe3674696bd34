package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

func TestConfigFileVMSideKeys(t *testing.T) {
	type vmConfig struct {
		EventFolder       string
		MaxEventFileCount int
		EventLogLevel     slog.Level
		TelemetryInterval time.Duration
		SerialConsole     string
	}
	for _, tt := range []struct {
		name, extra string
		want        vmConfig
	}{
		{"upstream's keys, our defaults", `"maxEventFileCount": 7, "fileLogLevelForEvents": "Warn",`,
			vmConfig{EventFolder: "/e", MaxEventFileCount: 7, EventLogLevel: slog.LevelWarn, SerialConsole: "/dev/console"}},
		{"console elsewhere, telemetry every second", `"serialConsolePath": "/tmp/c", "telemetryIntervalInSeconds": 1,`,
			vmConfig{EventFolder: "/e", SerialConsole: "/tmp/c", TelemetryInterval: time.Second}},
		{"console off", `"serialConsolePath": "off",`, vmConfig{EventFolder: "/e"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseConfigFile([]byte(`{` + tt.extra + `"logFolder": "", "eventFolder": "/e", "latchKeyFolder": "/k",
				"monitorIntervalInSeconds": 60, "pollKeyStatusIntervalInSeconds": 15, "ebpfProgramName": "x"}`))
			if err != nil {
				t.Fatal(err)
			}
			c, err := f.Config()
			if err != nil {
				t.Fatal(err)
			}
			got := vmConfig{EventFolder: c.EventFolder, MaxEventFileCount: c.MaxEventFileCount, EventLogLevel: c.EventLogLevel,
				TelemetryInterval: c.TelemetryInterval, SerialConsole: c.SerialConsole}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// A local-rules rule set as the latch publishes it, and a host rule set
// whose lists are incomplete (upstream then uses none of them).
var (
	localItem = &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "abc-useLocalFileRules-true",
		Rules: &msp.AccessControlRules{
			Privileges: []msp.Privilege{{Name: "token", Path: "/Metadata/Identity/OAuth2/Token", QueryParameters: map[string]string{"Resource": "HTTPS://X"}},
				{Name: "unused", Path: "/u"}},
			Roles:           []msp.Role{{Name: "r", Privileges: []string{"token", "missing"}}},
			Identities:      []msp.Identity{{Name: "root", UserName: "root"}, {Name: "app", ExePath: "/usr/bin/app"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"root", "app", "ghost"}}, {Role: "nope", Identities: []string{"root"}}},
		}}
	incompleteItem = func() *msp.AuthorizationItem {
		it, err := msp.ParseAuthorizationItem([]byte(`{"mode":"Audit","defaultAccess":"allow","id":"ws-1","rules":{"privileges":[{"name":"p","path":"/p"}]}}`))
		if err != nil {
			panic(err)
		}
		return it
	}()
)

// TestRuleSnapshotShape: upstream's AuthorizationRulesForLogging, field
// for field, with the raw local-rules id the pen-test harness greps for.
func TestRuleSnapshotShape(t *testing.T) {
	doc := NewRuleSnapshot(map[msp.Endpoint]*msp.AuthorizationItem{msp.EndpointIMDS: localItem, msp.EndpointWireServer: incompleteItem})
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"inputRules": map[string]any{
			"imds": map[string]any{"id": "abc-useLocalFileRules-true", "mode": "enforce", "defaultAccess": "deny", "rules": map[string]any{
				"privileges": []any{map[string]any{"name": "token", "path": "/Metadata/Identity/OAuth2/Token", "queryParameters": map[string]any{"Resource": "HTTPS://X"}},
					map[string]any{"name": "unused", "path": "/u"}},
				"roles":      []any{map[string]any{"name": "r", "privileges": []any{"token", "missing"}}},
				"identities": []any{map[string]any{"name": "root", "userName": "root"}, map[string]any{"name": "app", "exePath": "/usr/bin/app"}},
				"roleAssignments": []any{map[string]any{"role": "r", "identities": []any{"root", "app", "ghost"}},
					map[string]any{"role": "nope", "identities": []any{"root"}}},
			}},
			"wireserver": map[string]any{"id": "ws-1", "mode": "audit", "defaultAccess": "allow", "rules": map[string]any{
				"privileges": []any{map[string]any{"name": "p", "path": "/p"}}}},
		},
		"computedRules": map[string]any{
			"imds": map[string]any{"id": "abc-useLocalFileRules-true", "defaultAllowed": false, "mode": "Enforce",
				"privileges": map[string]any{
					"token":  map[string]any{"name": "token", "path": "/metadata/identity/oauth2/token", "queryParameters": map[string]any{"resource": "https://x"}},
					"unused": map[string]any{"name": "unused", "path": "/u"}},
				"privilegeAssignments": map[string]any{"token": []any{"app", "root"}},
				"identities": map[string]any{"root": map[string]any{"name": "root", "userName": "root"},
					"app": map[string]any{"name": "app", "exePath": "/usr/bin/app"}},
			},
			"wireserver": map[string]any{"id": "ws-1", "defaultAllowed": true, "mode": "Audit",
				"privileges": map[string]any{}, "privilegeAssignments": map[string]any{}, "identities": map[string]any{}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !bytes.Contains(data, []byte("useLocalFileRules-true")) {
		t.Error("the pen-test marker is missing")
	}
}

func snapshotFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "AuthorizationRules_") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestRuleSnapshotsRotateAtFive(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 4, 17, 0, 0, 0, time.UTC)
	w := &ruleSnapshots{dir: dir, keep: RuleSnapshotsKept, now: func() time.Time { now = now.Add(1500 * time.Millisecond); return now },
		logger: slog.New(slog.DiscardHandler)}
	w.observe(&keylatch.Snapshot{}) // no rules yet: nothing to write
	if got := snapshotFiles(t, dir); len(got) != 0 {
		t.Fatalf("files before any rules: %v", got)
	}
	snap := func(id string) *keylatch.Snapshot {
		return &keylatch.Snapshot{Items: map[msp.Endpoint]*msp.AuthorizationItem{msp.EndpointIMDS: {Mode: msp.ModeAudit, ID: id}}}
	}
	for i := range 7 {
		id := "rules-" + string(rune('a'+i))
		w.observe(snap(id))
		w.observe(snap(id)) // unchanged: not written again
	}
	got := snapshotFiles(t, dir)
	if len(got) != RuleSnapshotsKept {
		t.Fatalf("%d files, want %d: %v", len(got), RuleSnapshotsKept, got)
	}
	name := regexp.MustCompile(`^AuthorizationRules_\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d\.\d{3}-\d+\.json$`)
	var ids []string
	for _, n := range got {
		if !name.MatchString(n) {
			t.Errorf("file name %q is not upstream's", n)
		}
		data, _ := os.ReadFile(filepath.Join(dir, n))
		var doc RuleSnapshot
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, doc.InputRules.IMDS.ID)
	}
	if want := []string{"rules-c", "rules-d", "rules-e", "rules-f", "rules-g"}; !slices.Equal(ids, want) {
		t.Errorf("kept %v, want the newest five %v", ids, want)
	}
	// Rules going away is a change too.
	w.observe(&keylatch.Snapshot{})
	got = snapshotFiles(t, dir)
	data, _ := os.ReadFile(filepath.Join(dir, got[len(got)-1]))
	var last RuleSnapshot
	if err := json.Unmarshal(data, &last); err != nil || len(got) != RuleSnapshotsKept || last.InputRules.IMDS != nil {
		t.Errorf("after the rules went: %v, newest %s (%v)", got, data, err)
	}
}

var consoleLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} azure-proxy-agent_1\.2\.3\(\d+\) - (.*)$`)

func TestSerialConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &serialConsole{path: path, version: "1.2.3", now: time.Now}
	c.line("============== GuestProxyAgent (1.2.3) is starting")
	c.Write([]byte("Provision finished successfully\r\n"))
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var msgs []string
	for _, l := range lines {
		m := consoleLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q is not upstream's format", l)
		}
		msgs = append(msgs, m[1])
	}
	if want := []string{"============== GuestProxyAgent (1.2.3) is starting", "Provision finished successfully"}; !slices.Equal(msgs, want) {
		t.Errorf("messages %q, want %q", msgs, want)
	}

	// Best effort, never blocking: a missing console and a FIFO nobody
	// reads lose the line at once.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(t.TempDir(), "absent", "console"), fifo, ""} {
		done := make(chan struct{})
		go func() { (&serialConsole{path: p, now: time.Now}).line("x"); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("writing to %q blocked", p)
		}
	}
}

func TestSystemdUnit(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	const service = "0::/system.slice/azure-proxy-agent.service\n"
	for _, tt := range []struct {
		name    string
		getenv  func(string) string
		running bool
		cgroup  string
		ok      bool
		why     string
	}{
		{"the service", env("INVOCATION_ID", "abc"), true, service, true, ""},
		{"the service, notify socket", env("NOTIFY_SOCKET", "/run/systemd/notify"), true, service, true, ""},
		{"v1 hierarchy", env("INVOCATION_ID", "abc"), true, "12:cpu,cpuacct:/\n1:name=systemd:/system.slice/azure-proxy-agent.service\n", true, ""},
		{"not started by systemd", env(), true, service, false, "not started by systemd"},
		{"no systemd", env("INVOCATION_ID", "abc"), false, service, false, "systemd is not running"},
		{"another unit", env("INVOCATION_ID", "abc"), true, "0::/system.slice/ssh.service\n", false, "not running as azure-proxy-agent.service"},
		{"a test's cgroup", env("INVOCATION_ID", "abc"), true, "0::/gpa-e2e-123\n", false, "not running as"},
		{"a look-alike unit", env("INVOCATION_ID", "abc"), true, "0::/system.slice/my-azure-proxy-agent.service\n", false, "not running as"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := systemdUnit(tt.getenv, tt.running, tt.cgroup)
			if ok != tt.ok || !strings.Contains(why, tt.why) || (tt.ok && why != "") {
				t.Errorf("systemdUnit = %v %q, want %v %q", ok, why, tt.ok, tt.why)
			}
		})
	}
}

func TestApplyCPUQuota(t *testing.T) {
	for _, tt := range []struct {
		name    string
		err     error
		wantLog string
	}{
		{"set", nil, "Successfully set azure-proxy-agent.service CPU quota to 15%"},
		{"systemctl fails", errors.New("exit status 1: Unit not found"), "Failed to set azure-proxy-agent.service CPU quota with error: exit status 1: Unit not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got [][]string
			run := func(_ context.Context, name string, args ...string) error {
				got = append(got, append([]string{name}, args...))
				return tt.err
			}
			var logs bytes.Buffer
			applyCPUQuota(context.Background(), run, slog.New(slog.NewTextHandler(&logs, nil)))
			if diff := cmp.Diff([][]string{{"systemctl", "set-property", "azure-proxy-agent.service", "CPUQuota=15%"}}, got); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q, want %q", logs.String(), tt.wantLog)
			}
		})
	}
}
