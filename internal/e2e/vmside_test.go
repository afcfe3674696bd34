package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

// TestTelemetryAndRuleSnapshots runs the agent binary as on a VM: its log
// reaches the host as telemetry signed with the latched key, the console
// lines go to the console file, and six rule changes leave the last five
// AuthorizationRules snapshots in the log folder.
func TestTelemetryAndRuleSnapshots(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	a := env.StartAgent(t)
	if code, out := env.StatusCLI(t, 10); code != 0 {
		t.Fatalf("--status --wait 10: exit %d %q\n%s", code, out, a.Output())
	}
	key, ok := env.Host.LatchedKey()
	if !ok {
		t.Fatal("no latched key")
	}

	var ids []string
	for i := range agent.RuleSnapshotsKept + 1 {
		raw := fmt.Sprintf("e2e-imds-%d", i)
		id := raw + "-useLocalFileRules-false" // as upstream shows it
		ids = append(ids, id)
		env.Host.SetRules(msp.EndpointIMDS, &msp.AuthorizationItem{Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: raw})
		env.WaitStatus(t, 5*time.Second, "imdsRuleId "+id, func(s *status.AggregateStatus) bool {
			return s.ProxyAgentStatus.KeyLatchStatus.States["imdsRuleId"] == id
		})
	}
	var kept []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		kept = snapshotIDs(t, env.LogDir)
		if len(kept) > 0 && kept[len(kept)-1] == ids[len(ids)-1] || time.Now().After(deadline) {
			break
		}
	}
	if want := ids[1:]; !slices.Equal(kept, want) {
		t.Errorf("snapshots kept for imds ids %q, want the last %d: %q", kept, agent.RuleSnapshotsKept, want)
	}

	var signed int
	var bodies strings.Builder
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		signed, bodies = 0, strings.Builder{}
		for _, r := range env.Host.Telemetry() {
			bodies.Write(r.Body)
			if r.SignatureValid && r.KeyGUID == key.GUID {
				signed++
			}
		}
		if signed > 0 && strings.Contains(bodies.String(), "Authorization rules are written to file") || time.Now().After(deadline) {
			break
		}
	}
	if signed == 0 {
		t.Errorf("no telemetry post signed with the latched key reached the host (%d posts)", len(env.Host.Telemetry()))
	}
	for _, want := range []string{`<?xml version="1.0"?><TelemetryData version="1.0"><Provider id="FFF0196F-EE4C-4EAF-9AA5-776F622DEB4F">`,
		"is starting", "Authorization rules are written to file"} {
		if !strings.Contains(bodies.String(), want) {
			t.Errorf("telemetry sent lacks %q", want)
		}
	}
	for _, r := range env.Host.Telemetry() {
		if len(r.Body) >= 64<<10 {
			t.Errorf("a telemetry post of %d bytes", len(r.Body))
		}
	}

	console, err := os.ReadFile(env.ConsolePath())
	if err != nil || !strings.Contains(string(console), "GuestProxyAgent") || !strings.Contains(string(console), "Provision finished successfully") {
		t.Errorf("console file (%v):\n%s", err, console)
	}
	if !a.Alive() {
		t.Fatalf("the agent died:\n%s", a.Output())
	}
}

// snapshotIDs returns the imds rule id of each AuthorizationRules file in
// dir, oldest first.
func snapshotIDs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "AuthorizationRules_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	var ids []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc agent.RuleSnapshot
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		id := ""
		if doc.InputRules != nil && doc.InputRules.IMDS != nil {
			id = doc.InputRules.IMDS.ID
		}
		ids = append(ids, id)
	}
	return ids
}
