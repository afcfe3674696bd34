package fleet_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
	"github.com/metadatasec/gpa/arm/fleet"
)

func TestInventoryPagesAndParses(t *testing.T) {
	srv := newServer(t)
	ids := srv.AddFleet(25, &armtest.FleetOptions{ScaleSets: 2, Subscriptions: 2})
	c := newClient(t, srv)
	var got []fleet.Resource
	resp, err := c.Inventory(ctx(t), fleet.Selection{}, func(r fleet.Resource) error {
		got = append(got, r)
		return nil
	}, &fleet.InventoryOptions{PageSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rows != 25 || resp.Pages != 7 || resp.TotalRecords != 25 {
		t.Errorf("response %+v, want 25 rows in 7 pages", resp)
	}
	seen := map[string]bool{}
	for i, r := range got {
		if seen[r.ID] {
			t.Errorf("%s twice", r.ID)
		}
		seen[r.ID] = true
		if i > 0 && strings.ToLower(got[i-1].ID) > strings.ToLower(r.ID) {
			t.Errorf("not ordered by id at %d", i)
		}
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("%s missing", id)
		}
	}
	// Generated VM 11 runs Azure Linux with a linked WireServer profile;
	// VM 2 runs RHEL 9 with MSP enabled.
	byName := map[string]fleet.Resource{}
	for _, r := range got {
		byName[r.Name] = r
	}
	ws := byName["fleet-vm-000011"]
	state, ref := fleet.EndpointState(ws.Settings.WireServer)
	if state != "profile" || ref != armtest.FleetProfileVersion(ws.SubscriptionID) || ws.ImageSupport != fleet.ImageSupported {
		t.Errorf("fleet-vm-000011: %+v state %s ref %s", ws, state, ref)
	}
	if r := byName["fleet-vm-000002"]; r.Image != "RedHat:RHEL:9_4" || r.ImageSupport != fleet.ImageUnsupported || !r.Enabled() {
		t.Errorf("fleet-vm-000002: %+v", r)
	}
	if r := byName["fleet-ss-000000"]; r.Kind != fleet.KindScaleSet || r.UpgradeMode != "Manual" {
		t.Errorf("scale set: %+v", r)
	}
	if r := byName["fleet-ss-000001_1"]; r.Kind != fleet.KindInstance || r.ScaleSetID() != byName["fleet-ss-000001"].ID {
		t.Errorf("instance: %+v", r)
	}
}

func TestInventoryScopeAndQuery(t *testing.T) {
	srv := newServer(t)
	srv.AddFleet(10, &armtest.FleetOptions{Subscriptions: 2})
	srv.SetManagementGroup("mg-prod", armtest.FleetSubscription(1))
	c := newClient(t, srv)
	sel := fleet.Selection{Scope: fleet.Scope{ManagementGroups: []string{"mg-prod"}}, Where: "location =~ 'eastus'", Tags: map[string]string{"env": "PROD"}}
	var subs []string
	if _, err := c.Inventory(ctx(t), sel, func(r fleet.Resource) error {
		subs = append(subs, r.SubscriptionID)
		if r.Tags["env"] != "prod" {
			t.Errorf("%s has env=%s", r.ID, r.Tags["env"])
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	// Subscription 2 holds the odd resources, which are env=dev: the tag
	// filter, checked again client-side, leaves none.
	if len(subs) != 0 {
		t.Errorf("got %v", subs)
	}
	q := srv.ResourceGraphQueries()
	if len(q) != 1 || q[0] != sel.Query() || !strings.Contains(q[0], "| where (location =~ 'eastus')") || !strings.Contains(q[0], "| where tags['env'] =~ 'PROD'") {
		t.Errorf("queries %q", q)
	}
}

func TestQueryQuotesTags(t *testing.T) {
	got := fleet.Selection{Tags: map[string]string{"o'k": `a\b`}}.Query()
	if !strings.Contains(got, `| where tags['o\'k'] =~ 'a\\b'`) {
		t.Errorf("query %s", got)
	}
}

func TestInventoryWaitsForGraphQuota(t *testing.T) {
	srv := newServer(t)
	srv.AddFleet(12, nil)
	const window = 150 * time.Millisecond
	srv.SetResourceGraphQuota(2, window)
	c := newClient(t, srv)
	start := time.Now()
	resp, err := c.Inventory(ctx(t), fleet.Selection{}, func(fleet.Resource) error { return nil }, &fleet.InventoryOptions{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rows != 12 || resp.Pages != 6 {
		t.Errorf("%+v", resp)
	}
	// Six pages at two per window need at least two full resets.
	if el := time.Since(start); el < 2*window {
		t.Errorf("six pages in %v: the client did not wait for the quota to reset", el)
	}
	throttled := 0
	for _, r := range srv.Requests() {
		if r.Path == armtest.ResourceGraphPath {
			throttled++
		}
	}
	// The client pauses when the remaining quota reaches zero, so it
	// should rarely, if ever, be refused.
	if throttled > 6+2 {
		t.Errorf("%d graph requests for 6 pages", throttled)
	}
}

func TestWantRefusesModeAndProfile(t *testing.T) {
	ref := armtest.FleetProfileVersion(armtest.FleetSubscription(0))
	for name, body := range map[string]string{
		"both":    `{"proxyAgentSettings":{"wireServer":{"mode":"Enforce","inVMAccessControlProfileReferenceId":"` + ref + `"}}}`,
		"key":     `{"proxyAgentSettings":{"keyIncarnationId":3}}`,
		"mode":    `{"proxyAgentSettings":{"imds":{"mode":"enforce"}}}`,
		"typo":    `{"proxyAgentSettings":{"enabled":true},"wehre":"x"}`,
		"empty":   `{"proxyAgentSettings":{}}`,
		"toplvl":  `{"proxyAgentSettings":{"mode":"Audit"}}`,
		"badref":  `{"proxyAgentSettings":{"imds":{"inVMAccessControlProfileReferenceId":"/subscriptions/x"}}}`,
		"notjson": `{`,
	} {
		_, err := fleet.ReadWant(strings.NewReader(body))
		if !errors.Is(err, fleet.ErrInvalidWant) {
			t.Errorf("%s: %v", name, err)
		}
		if name == "both" && !errors.Is(err, arm.ErrModeAndProfile) {
			t.Errorf("both: %v does not match arm.ErrModeAndProfile", err)
		}
	}
}

func yes() *bool { b := true; return &b }

func TestDiff(t *testing.T) {
	ref := armtest.FleetProfileVersion(armtest.FleetSubscription(0))
	want := fleet.Want{Settings: arm.ProxyAgentSettings{Enabled: yes(), WireServer: arm.InlineMode(arm.ModeEnforce), IMDS: arm.LinkedProfile(ref)}}
	tests := []struct {
		name  string
		have  *arm.ProxyAgentSettings
		diffs []string
		patch string
	}{
		{"none", nil, []string{"enabled: false -> true", "wireServer: - -> Enforce", "imds: - -> ws-linux/1.0.0"},
			`{"proxyAgentSettings":{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"inVMAccessControlProfileReferenceId":"` + ref + `"}}}`},
		{"same", &arm.ProxyAgentSettings{Enabled: yes(), WireServer: arm.InlineMode(arm.ModeEnforce), IMDS: arm.LinkedProfile(strings.ToUpper(ref))}, nil, ""},
		{"profile to mode and mode to profile",
			&arm.ProxyAgentSettings{Enabled: yes(), WireServer: arm.LinkedProfile(ref), IMDS: arm.InlineMode(arm.ModeAudit)},
			[]string{"wireServer: ws-linux/1.0.0 -> Enforce", "imds: Audit -> ws-linux/1.0.0"},
			`{"proxyAgentSettings":{"wireServer":{"mode":"Enforce"},"imds":{"inVMAccessControlProfileReferenceId":"` + ref + `"}}}`},
	}
	for _, tt := range tests {
		d := want.Diff(tt.have)
		var diffs []string
		for _, x := range d.Differences {
			diffs = append(diffs, x.String())
		}
		if !cmp.Equal(diffs, tt.diffs) {
			t.Errorf("%s: differences %s", tt.name, cmp.Diff(tt.diffs, diffs))
		}
		patch := ""
		if d.Change != nil {
			var err error
			if patch, err = fleet.PatchBody(*d.Change); err != nil {
				t.Fatal(err)
			}
			if err := d.Change.Validate(""); err != nil {
				t.Errorf("%s: change breaks arm's rules: %v", tt.name, err)
			}
		}
		if patch != tt.patch {
			t.Errorf("%s: patch %s, want %s", tt.name, patch, tt.patch)
		}
	}
}

func TestParseWaves(t *testing.T) {
	got, err := fleet.ParseWaves("1%, 10%,50%,100%")
	if err != nil || !cmp.Equal(got, []float64{0.01, 0.1, 0.5, 1}) {
		t.Errorf("%v %v", got, err)
	}
	for _, bad := range []string{"10%,5%", "0%", "150%", "x", "0.5,0.5"} {
		if _, err := fleet.ParseWaves(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

var enforceAll = fleet.Want{Settings: arm.ProxyAgentSettings{Enabled: yes(), WireServer: arm.InlineMode(arm.ModeEnforce), IMDS: arm.InlineMode(arm.ModeEnforce)}}

func TestApplyWavesAndBodies(t *testing.T) {
	srv := newServer(t)
	ids := srv.AddFleet(40, &armtest.FleetOptions{ScaleSets: 3})
	c := newClient(t, srv)
	var mu sync.Mutex
	var waves []fleet.Wave
	events := map[fleet.Status]int{}
	resp, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, &fleet.RolloutOptions{
		Waves: []float64{0.1, 0.5, 1}, MaxParallel: 4, PollFrequency: time.Millisecond,
		BeforeWave: func(_ context.Context, w fleet.Wave) error { waves = append(waves, w); return nil },
		OnEvent: func(e fleet.Event) {
			mu.Lock()
			events[e.Status]++
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every sixth resource already has Enforce/Enforce; the scale sets
	// come with 2 instances each (9 rows), leaving 31 VMs.
	if resp.Failed != 0 || resp.Written != resp.Planned || resp.Waves != 3 {
		t.Errorf("%+v", resp)
	}
	if len(waves) != 2 || waves[0].Index != 2 || waves[1].To != resp.Planned {
		t.Errorf("gate saw %+v", waves)
	}
	bodies := patches(t, srv)
	writes := srv.Writes()
	for _, id := range ids {
		if strings.Contains(id, "/virtualMachines/") && strings.Contains(id, "ScaleSets") {
			continue
		}
		got := srv.ProxyAgentSettings(id)
		if !strings.Contains(string(got), `"wireServer":{"mode":"Enforce"}`) || !strings.Contains(string(got), `"imds":{"mode":"Enforce"}`) {
			t.Errorf("%s: %s", id, got)
		}
		if writes[strings.ToLower(id)] > 1 {
			t.Errorf("%s written %d times", id, writes[strings.ToLower(id)])
		}
	}
	for path, bs := range bodies {
		for _, b := range bs {
			for _, ep := range []string{"wireServer", "imds"} {
				if e, ok := b[ep].(map[string]any); ok && e["mode"] != nil && e["inVMAccessControlProfileReferenceId"] != nil {
					t.Errorf("%s: %s carries mode and reference", path, ep)
				}
			}
		}
	}
	// Manual scale sets: model updated, then every instance upgraded.
	for _, id := range ids {
		if strings.Contains(id, "ScaleSets/") && strings.Contains(id, "/virtualMachines/") {
			got := srv.ProxyAgentSettings(id)
			if !strings.Contains(string(got), `"imds":{"mode":"Enforce"}`) {
				t.Errorf("instance %s: %s", id, got)
			}
		}
	}
	if n := len(srv.UpgradeCounts()); n != 3 {
		t.Errorf("manual upgrades on %d scale sets, want 3", n)
	}
	// A second run finds nothing to do.
	srv.ResetRequests()
	resp, err = c.Apply(ctx(t), fleet.Selection{}, enforceAll, &fleet.RolloutOptions{PollFrequency: time.Millisecond})
	if err != nil || resp.Planned != 0 {
		t.Errorf("second run %+v %v", resp, err)
	}
}

func TestApplyDryRunWritesNothing(t *testing.T) {
	srv := newServer(t)
	srv.AddFleet(12, nil)
	c := newClient(t, srv)
	state := filepath.Join(t.TempDir(), "state")
	var details []string
	var mu sync.Mutex
	resp, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, &fleet.RolloutOptions{DryRun: true, StatePath: state,
		OnEvent: func(e fleet.Event) { mu.Lock(); details = append(details, e.Detail); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if resp.DryRun != 10 || resp.Written != 0 {
		t.Errorf("%+v", resp)
	}
	for _, r := range srv.Requests() {
		if r.Method != "GET" && r.Path != armtest.ResourceGraphPath {
			t.Errorf("dry run sent %s %s", r.Method, r.Path)
		}
	}
	if len(srv.Writes()) != 0 {
		t.Errorf("writes %v", srv.Writes())
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("dry run touched the state file: %v", err)
	}
	if !strings.Contains(strings.Join(details, "\n"), `{"proxyAgentSettings":{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Enforce"}}}`) {
		t.Errorf("details %q", details)
	}
}

func TestApplyStopsAfterMaxFailuresAndResumes(t *testing.T) {
	srv := newServer(t)
	srv.AddFleet(30, nil)
	c := newClient(t, srv)
	state := filepath.Join(t.TempDir(), "state")
	srv.SetFeatureRegistered(armtest.FleetSubscription(0), false)
	o := &fleet.RolloutOptions{MaxParallel: 1, MaxFailures: 2, StatePath: state, PollFrequency: time.Millisecond}
	resp, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, o)
	if !errors.Is(err, fleet.ErrTooManyFailures) || resp.Failed != 3 {
		t.Fatalf("%+v %v", resp, err)
	}
	if errors.Is(err, arm.ErrFeatureNotRegistered) {
		t.Log("the failure cause is reported per event")
	}
	srv.SetFeatureRegistered(armtest.FleetSubscription(0), true)
	resp, err = c.Apply(ctx(t), fleet.Selection{}, enforceAll, o)
	if err != nil || resp.Failed != 0 || resp.Written+resp.Unchanged+resp.Skipped != resp.Planned {
		t.Fatalf("resumed: %+v %v", resp, err)
	}
	writtenOnce(t, srv)
	// Another desired state must not reuse this state file.
	other := enforceAll
	other.Settings.IMDS = arm.InlineMode(arm.ModeAudit)
	if _, err := c.Apply(ctx(t), fleet.Selection{}, other, o); !errors.Is(err, fleet.ErrStateMismatch) {
		t.Errorf("other rollout on the same state: %v", err)
	}
}

func TestApplyGateStops(t *testing.T) {
	srv := newServer(t)
	srv.AddFleet(20, nil)
	c := newClient(t, srv)
	resp, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, &fleet.RolloutOptions{Waves: []float64{0.25, 1}, PollFrequency: time.Millisecond,
		BeforeWave: func(context.Context, fleet.Wave) error { return errors.New("simulate found denials") }})
	if !errors.Is(err, fleet.ErrGateStopped) || resp.Waves != 1 || resp.Written != 5 {
		t.Errorf("%+v %v", resp, err)
	}
}

func TestResetKeysOncePerResource(t *testing.T) {
	srv := newServer(t)
	ids := srv.AddFleet(14, &armtest.FleetOptions{ScaleSets: 2})
	c := newClient(t, srv)
	state := filepath.Join(t.TempDir(), "state")
	resp, err := c.ResetKeys(ctx(t), fleet.Selection{}, &fleet.RolloutOptions{StatePath: state, PollFrequency: time.Millisecond, MaxParallel: 3})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Planned != 12 || resp.Written != 12 {
		t.Errorf("%+v", resp)
	}
	for _, id := range ids {
		want := int32(1)
		if strings.HasSuffix(id, "/fleet-ss-000000") || strings.HasSuffix(id, "/fleet-ss-000001") {
			want = 0
		}
		if got := srv.KeyIncarnationID(id); got != want {
			t.Errorf("%s: key %d, want %d", id, got, want)
		}
	}
	// Run again: the state says everything is done.
	resp, err = c.ResetKeys(ctx(t), fleet.Selection{}, &fleet.RolloutOptions{StatePath: state, PollFrequency: time.Millisecond})
	if err != nil || resp.Skipped != 12 || resp.Written != 0 {
		t.Errorf("again: %+v %v", resp, err)
	}
}

func TestStateFileSurvivesATornLine(t *testing.T) {
	srv := newServer(t)
	srv.AddFleet(10, nil)
	c := newClient(t, srv)
	state := filepath.Join(t.TempDir(), "state")
	o := &fleet.RolloutOptions{StatePath: state, PollFrequency: time.Millisecond, MaxParallel: 1}
	first, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, o)
	if err != nil {
		t.Fatal(err)
	}
	// Tear the last result line, as a crash in the middle of a write would.
	st, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(state, st.Size()-7); err != nil {
		t.Fatal(err)
	}
	second, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, o)
	if err != nil || second.Skipped != first.Planned-1 || second.Unchanged != 1 {
		t.Fatalf("after the tear: %+v %v", second, err)
	}
	third, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, o)
	if err != nil || third.Skipped != first.Planned {
		t.Errorf("the record after the torn line was lost: %+v %v", third, err)
	}
	writtenOnce(t, srv)
}
