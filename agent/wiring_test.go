package agent

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

func testKey(t *testing.T) msp.Key {
	t.Helper()
	k, err := msp.NewKey("6f1b2c9e-0000-4000-8000-000000000001", "4A404E635266556A586E3272357538782F413F4428472B4B6250645367566B59")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeyLatchStates: what status.json's keyLatchStatus.states shows of a
// snapshot.
func TestKeyLatchStates(t *testing.T) {
	inc := uint32(7)
	tests := []struct {
		name string
		snap *keylatch.Snapshot
		want status.KeyLatchStates
	}{
		{"unknown", &keylatch.Snapshot{State: msp.SecureChannelUnknown}, status.KeyLatchStates{SecureChannelState: "Unknown"}},
		{"disabled", &keylatch.Snapshot{State: msp.SecureChannelDisabled}, status.KeyLatchStates{SecureChannelState: "disabled"}},
		{"latched with rules", &keylatch.Snapshot{State: "WireServer Enforce -  IMDS Audit - HostGA Enforce", Key: testKey(t), KeyIncarnationID: &inc,
			RuleIDs: map[msp.Endpoint]string{msp.EndpointWireServer: "ws-1", msp.EndpointIMDS: "imds-1", msp.EndpointHostGA: "ga-1"}},
			status.KeyLatchStates{SecureChannelState: "WireServer Enforce -  IMDS Audit - HostGA Enforce", KeyGUID: "6f1b2c9e-0000-4000-8000-000000000001",
				WireServerRuleID: "ws-1", IMDSRuleID: "imds-1", HostGARuleID: "ga-1", KeyIncarnationID: "7"}},
		{"latched, no incarnation", &keylatch.Snapshot{State: "wireserver", Key: testKey(t)},
			status.KeyLatchStates{SecureChannelState: "wireserver", KeyGUID: "6f1b2c9e-0000-4000-8000-000000000001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, keyLatchStates(tt.snap)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// fakeLatch is the feed's view of a Latcher.
type fakeLatch struct {
	cur   *keylatch.Snapshot
	wakes int
}

func (f *fakeLatch) Current() *keylatch.Snapshot { return f.cur }
func (f *fakeLatch) Wake()                       { f.wakes++ }

// TestStatusFeed: a snapshot reaches status.json's states, provisioning's
// latched flag and the embedder's hook; a /provision notify wakes the
// latch, and clears provisioning's key-latch flag only while unlatched.
func TestStatusFeed(t *testing.T) {
	reg := status.NewRegistry(&status.RegistryOptions{})
	prov, err := status.NewProvision(&status.ProvisionOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	var seen []*keylatch.Snapshot
	latch := &fakeLatch{}
	f := &statusFeed{reg: reg, prov: prov, latch: latch, onSnapshot: func(s *keylatch.Snapshot) { seen = append(seen, s) }}

	latched := &keylatch.Snapshot{State: "WireServer Enforce -  IMDS Enforce - HostGA Enforce", Key: testKey(t)}
	f.snapshot(latched)
	got := reg.Snapshot(time.Now()).ProxyAgentStatus.KeyLatchStatus.States
	if got[status.StateKeySecureChannel] != latched.State || got[status.StateKeyKeyGUID] != latched.Key.GUID {
		t.Errorf("states %v", got)
	}
	if len(seen) != 1 || seen[0] != latched {
		t.Errorf("hook saw %v", seen)
	}

	ctx := context.Background()
	if err := prov.SetReady(ctx, status.KeyLatchReady); err != nil {
		t.Fatal(err)
	}
	latch.cur = latched
	f.notify()
	if prov.Flags()&status.KeyLatchReady == 0 || latch.wakes != 1 {
		t.Errorf("latched: flags %v, wakes %d; want KEY_LATCH kept and one wake", prov.Flags(), latch.wakes)
	}
	latch.cur = &keylatch.Snapshot{State: msp.SecureChannelUnknown}
	f.notify()
	if prov.Flags()&status.KeyLatchReady != 0 || latch.wakes != 2 {
		t.Errorf("unlatched: flags %v, wakes %d; want KEY_LATCH cleared and a second wake", prov.Flags(), latch.wakes)
	}

	// run stops with its context.
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	snaps := make(chan *keylatch.Snapshot)
	go func() { done <- f.run(ctx, snaps) }()
	snaps <- latched
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if len(seen) != 2 {
		t.Errorf("run delivered %d snapshots to the hook, want 2 in all", len(seen))
	}
}

// TestStatusFeedRestored: the snapshot a restarted latch restored from
// disk, published before the feed subscribed, reaches status.json.
func TestStatusFeedRestored(t *testing.T) {
	reg := status.NewRegistry(&status.RegistryOptions{})
	prov, err := status.NewProvision(&status.ProvisionOptions{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	restored := &keylatch.Snapshot{State: "WireServer Enforce -  IMDS Enforce - HostGA Enforce", Key: testKey(t), Restored: true}
	f := &statusFeed{reg: reg, prov: prov, latch: &fakeLatch{cur: restored}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.run(ctx, make(chan *keylatch.Snapshot)); err != nil {
		t.Fatal(err)
	}
	got := reg.Snapshot(time.Now()).ProxyAgentStatus.KeyLatchStatus.States
	if got[status.StateKeySecureChannel] != restored.State || got[status.StateKeyKeyGUID] != restored.Key.GUID {
		t.Errorf("states %v, want the restored state and key", got)
	}
}

// TestAuditSinks: every record is counted for status.json, lands in both
// summaries when authorization failed, and reaches the embedder's hook.
func TestAuditSinks(t *testing.T) {
	reg := status.NewRegistry(&status.RegistryOptions{})
	var hooked []string
	sink := auditSinks{registrySummaries{reg}, func(r *msp.AuditRecord) { hooked = append(hooked, r.URL) }}
	at := time.Date(2025, 4, 23, 12, 0, 0, 0, time.UTC)
	deny := &msp.AuditRecord{Time: at, URL: "/machine", UserName: "nobody", IP: "168.63.129.16", Port: 80,
		ResponseStatus: "403 Forbidden", StatusCode: 403, Decision: "deny"}
	unknown := &msp.AuditRecord{Time: at, URL: "/x", ResponseStatus: "421 Misdirected Request", StatusCode: 421}
	sink.Add(deny)
	sink.Add(deny)
	sink.Add(unknown)
	s := reg.Snapshot(at)
	if s.ProxyAgentStatus.ProxyConnectionsCount != 3 {
		t.Errorf("proxyConnectionsCount = %d, want 3", s.ProxyAgentStatus.ProxyConnectionsCount)
	}
	type row struct {
		IP, Status string
		Count      uint64
	}
	var rows []row
	for _, c := range s.FailedAuthenticateSummary {
		rows = append(rows, row{c.IP, c.ResponseStatus, c.Count})
	}
	want := []row{{"168.63.129.16", "403 Forbidden", 2}, {"None", "421 Misdirected Request", 1}}
	if diff := cmp.Diff(want, rows, cmpopts.SortSlices(func(a, b row) bool { return a.IP < b.IP })); diff != "" {
		t.Errorf("failedAuthenticateSummary (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/machine", "/machine", "/x"}, hooked); diff != "" {
		t.Errorf("hook (-want +got):\n%s", diff)
	}
}
