package keylatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// The state file is written and read back field for field; renaming a JSON
// field breaks this test.
func TestLatchStateRoundTrip(t *testing.T) {
	s := openTestStore(t, testStoreDir(t), nil)
	inc := uint32(7)
	want := &LatchState{
		Version: StateFileVersion, State: "WireServer Enforce -  IMDS Audit - HostGA Enforce",
		KeyGUID: guid1, KeyIncarnationID: &inc, PreviousKeyGUID: "0f0e0d0c-0000-0000-0000-000000000001",
		Endpoints: map[msp.Endpoint]*msp.AuthorizationItem{
			msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "ws",
				Rules: &msp.AccessControlRules{
					Privileges:      []msp.Privilege{{Name: "gs", Path: "/machine"}},
					Roles:           []msp.Role{{Name: "r", Privileges: []string{"gs"}}},
					Identities:      []msp.Identity{{Name: "root", UserName: "root"}},
					RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"root"}}},
				}},
			msp.EndpointIMDS: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "imds"},
		},
		Saved: time.Date(2026, 12, 4, 16, 0, 0, 0, time.UTC),
	}
	if err := s.SaveState(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	// present only records which lists the JSON had.
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(msp.AccessControlRules{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	raw, err := os.ReadFile(s.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"version": 1`, `"secureChannelState"`, `"keyGuid"`, `"keyIncarnationId": 7`, `"previousKeyGuid"`, `"endpoints"`, `"wireserver"`, `"imds"`, `"saved"`} {
		if !strings.Contains(string(raw), field) {
			t.Errorf("state file lacks %s:\n%s", field, raw)
		}
	}
	if fi, err := os.Stat(s.StatePath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if diff := cmp.Diff(map[msp.Endpoint]string{msp.EndpointWireServer: "ws", msp.EndpointIMDS: "imds"}, got.RuleIDs()); diff != "" {
		t.Errorf("RuleIDs (-want +got):\n%s", diff)
	}
	if err := s.SaveState(&LatchState{Version: StateFileVersion, State: "disabled", KeyGUID: "../../etc/passwd"}); err == nil {
		t.Error("SaveState accepted a guid naming a path outside the folder")
	}
}

// A state file that cannot be used is a typed error that names it, and
// reading it changes nothing on disk.
func TestLoadStateRefusesBadFiles(t *testing.T) {
	good := `{"version": 1, "secureChannelState": "disabled", "saved": "2026-12-04T16:00:00Z"}`
	tests := []struct {
		name    string
		content string // "" means no file
		mode    os.FileMode
		symlink bool
		want    error
	}{
		{"missing", "", 0o600, false, ErrNoState},
		{"garbage", "\x00\x01not json", 0o600, false, ErrCorruptState},
		{"truncated", good[:30], 0o600, false, ErrCorruptState},
		{"trailing data", good + "}", 0o600, false, ErrCorruptState},
		{"unknown field", `{"version": 1, "secureChannelState": "disabled", "key": "AAAA"}`, 0o600, false, ErrCorruptState},
		{"other version", `{"version": 2, "secureChannelState": "disabled"}`, 0o600, false, ErrCorruptState},
		{"no state", `{"version": 1, "secureChannelState": ""}`, 0o600, false, ErrCorruptState},
		{"guid with a path", `{"version": 1, "secureChannelState": "wireserver", "keyGuid": "../x"}`, 0o600, false, ErrCorruptState},
		{"unknown endpoint", `{"version": 1, "secureChannelState": "wireserver", "endpoints": {"ftp": {"mode": "enforce", "defaultAccess": "allow", "id": ""}}}`, 0o600, false, ErrCorruptState},
		{"null rule set", `{"version": 1, "secureChannelState": "wireserver", "endpoints": {"imds": null}}`, 0o600, false, ErrCorruptState},
		{"readable by others", good, 0o644, false, ErrInsecurePath},
		{"symlink", good, 0o600, true, ErrInsecurePath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, testStoreDir(t), nil)
			k := testKey(t, guid1)
			if err := s.Save(k); err != nil {
				t.Fatal(err)
			}
			if tt.content != "" {
				target := s.StatePath()
				if tt.symlink {
					target = filepath.Join(t.TempDir(), "elsewhere.json")
					if err := os.Symlink(target, s.StatePath()); err != nil {
						t.Fatal(err)
					}
				}
				writeRaw(t, target, []byte(tt.content), tt.mode)
			}
			before := dirListing(t, s.Dir())
			st, err := s.LoadState()
			if !errors.Is(err, tt.want) || st != nil {
				t.Fatalf("LoadState = %v, %v; want %v", st, err, tt.want)
			}
			if tt.content != "" && !strings.Contains(err.Error(), s.StatePath()) {
				t.Errorf("error %q does not name the file", err)
			}
			if diff := cmp.Diff(before, dirListing(t, s.Dir())); diff != "" {
				t.Errorf("LoadState changed the folder (-before +after):\n%s", diff)
			}
		})
	}
}

// dirListing maps each file of dir to its content.
func dirListing(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		out[e.Name()] = string(b)
	}
	return out
}

// restart builds a second latcher over r's key folder, as a restarted
// agent does.
func (r *rig) restart(t *testing.T) (*Latcher, *statusLog) {
	t.Helper()
	st := &statusLog{}
	client := NewClient(&ClientOptions{Addr: r.host.WireServerAddr(), Timeout: 300 * time.Millisecond})
	l, err := NewLatcher(&LatcherOptions{Client: client, Store: openTestStore(t, r.store.Dir(), nil), Clock: newFakeClock(),
		Redirect: r.redirect, OnStatus: st.add})
	if err != nil {
		t.Fatal(err)
	}
	return l, st
}

// A restarted latcher publishes what the earlier run knew before the host
// answers: the latched key and the modes, marked Restored. While status
// polls fail (500, garbage, hang) it keeps them; the first good poll
// replaces them with a confirmed snapshot.
func TestRestartWhileStatusFails(t *testing.T) {
	onStatus := func(f msptest.Fault) msptest.Fault {
		f.Endpoint, f.Path = msp.EndpointWireServer, StatusPath
		return f
	}
	for _, f := range []msptest.Fault{
		onStatus(msptest.Fault{Kind: msptest.FaultStatus, Status: 500}),
		onStatus(msptest.Fault{Kind: msptest.FaultMalformedJSON}),
		onStatus(msptest.Fault{Kind: msptest.FaultSlow, Delay: time.Second}),
	} {
		t.Run(f.Kind.String(), func(t *testing.T) {
			rules := enforceAll()
			rules[msp.EndpointIMDS].Mode = msp.ModeAudit
			r := newRig(t, &msptest.Options{Rules: rules}, nil)
			r.latcher.Poll(context.Background())
			first := r.latcher.Current()
			if !first.Latched() || first.Restored {
				t.Fatalf("first run: state %q restored %v", first.State, first.Restored)
			}
			raw, err := os.ReadFile(r.store.StatePath())
			if err != nil {
				t.Fatal(err)
			}
			assertNoSecret(t, first.Key, string(raw))

			r.host.SetFault(f)
			l2, st := r.restart(t)
			got := l2.Current()
			type view struct {
				State      string
				Restored   bool
				KeyGUID    string
				Signs      bool
				WireServer msp.Mode
				IMDS       msp.Mode
				RuleIDs    map[msp.Endpoint]string
				Inc        uint32
			}
			see := func(s *Snapshot) view {
				v := view{State: s.State, Restored: s.Restored, KeyGUID: s.Key.GUID, Signs: s.Signer != nil,
					WireServer: s.Mode(msp.EndpointWireServer), IMDS: s.Mode(msp.EndpointIMDS), RuleIDs: s.RuleIDs}
				if s.KeyIncarnationID != nil {
					v.Inc = *s.KeyIncarnationID
				}
				return v
			}
			want := see(first)
			want.Restored = true
			if diff := cmp.Diff(want, see(got)); diff != "" {
				t.Fatalf("restored snapshot (-want +got):\n%s", diff)
			}
			if !got.Key.Equal(first.Key) {
				t.Fatal("restored key differs from the latched one")
			}
			if diff := cmp.Diff(first.Items, got.Items, cmpopts.IgnoreUnexported(msp.AccessControlRules{})); diff != "" {
				t.Errorf("restored rule sets (-first +restored):\n%s", diff)
			}
			if ok := RedirectSet(got); len(ok) != 3 {
				t.Errorf("redirect set of the restored snapshot %v", ok)
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l2.Poll(ctx)
			l2.Poll(ctx)
			if s := l2.Current(); s != got {
				t.Fatalf("a failed poll replaced the restored snapshot: %+v", see(s))
			}
			if msg := l2.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgStatusFailed) {
				t.Fatalf("status %q", msg)
			}

			r.host.ClearFaults()
			l2.Poll(ctx)
			conf := l2.Current()
			want.Restored = false
			if diff := cmp.Diff(want, see(conf)); diff != "" || conf.Epoch <= got.Epoch {
				t.Fatalf("after the host answered, epoch %d (was %d) (-want +got):\n%s", conf.Epoch, got.Epoch, diff)
			}
			msgs := st.all()
			if last := msgs[len(msgs)-1].Message; !strings.HasPrefix(last, msp.KeyLatchMsgFoundLocal) {
				t.Errorf("last status %q, want %q", last, msp.KeyLatchMsgFoundLocal)
			}
			if n := len(r.host.RequestsTo("POST", KeyPath)); n != 1 {
				t.Errorf("%d keys acquired, want the first run's only", n)
			}
		})
	}
}

// Without a readable key file the restored snapshot still carries the
// modes, so a proxy knows not to send unsigned what Enforce refuses; a
// corrupt state file means a first boot, and nothing on disk is lost.
func TestRestoreFallbacks(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	r.latcher.Poll(context.Background())
	guid := r.latcher.Current().Key.GUID
	r.host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Endpoint: msp.EndpointWireServer, Path: StatusPath})

	if err := os.Rename(r.store.KeyPath(guid), r.store.KeyPath(guid)+".away"); err != nil {
		t.Fatal(err)
	}
	l, _ := r.restart(t)
	s := l.Current()
	if !s.Restored || s.Key.Valid() || s.Signer != nil || s.Mode(msp.EndpointIMDS) != msp.ModeEnforce {
		t.Errorf("key file gone: restored %v key %v signer %v IMDS %v", s.Restored, s.Key.Valid(), s.Signer != nil, s.Mode(msp.EndpointIMDS))
	}
	if err := os.Rename(r.store.KeyPath(guid)+".away", r.store.KeyPath(guid)); err != nil {
		t.Fatal(err)
	}

	writeRaw(t, r.store.StatePath(), []byte(`{"version": 1, "secureChannelState": `), 0o600)
	before := dirListing(t, r.store.Dir())
	l, _ = r.restart(t)
	if s := l.Current(); s.State != msp.SecureChannelUnknown || s.Restored || s.Epoch != 0 || s.Signer != nil {
		t.Errorf("corrupt state: state %q restored %v epoch %d", s.State, s.Restored, s.Epoch)
	}
	l.Poll(context.Background())
	if diff := cmp.Diff(before, dirListing(t, r.store.Dir())); diff != "" {
		t.Errorf("a failed poll over a corrupt state changed the folder (-before +after):\n%s", diff)
	}
	r.host.ClearFaults()
	l.Poll(context.Background())
	if s := l.Current(); !s.Latched() || s.Key.GUID != guid {
		t.Errorf("after the host answered: state %q key %s", s.State, s.Key.GUID)
	}
	if st, err := r.store.LoadState(); err != nil || st.KeyGUID != guid {
		t.Errorf("state file not replaced: %+v, %v", st, err)
	}
}

// A restored snapshot polls every second, like Unknown, and a restored
// latched state programs the redirect at once.
func TestRestoredCadenceAndRedirect(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	r.latcher.Poll(context.Background())
	r.host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Endpoint: msp.EndpointWireServer, Path: StatusPath})
	redirect := &recordingRedirect{}
	clock := newFakeClock()
	l, err := NewLatcher(&LatcherOptions{Client: r.client, Store: r.store, Clock: clock, Redirect: redirect, PollInterval: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for range 2 {
		ft := clock.next(t)
		if ft.d != FrequentPollInterval {
			t.Fatalf("sleep %v while restored, want %v", ft.d, FrequentPollInterval)
		}
		clock.fire(ft)
	}
	if got := redirect.last(); len(got) != 3 {
		t.Errorf("redirect while restored: %v", got)
	}
	r.host.ClearFaults()
	clock.fire(clock.next(t))
	if ft := clock.next(t); ft.d != 7*time.Second || l.Current().Restored {
		t.Errorf("after the host answered: sleep %v restored %v", ft.d, l.Current().Restored)
	}
	cancel()
	<-done
}

// When status polls succeed again after failing, the module message says
// so instead of keeping the failure until the next key event.
func TestStatusRecoveredMessage(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	ctx := context.Background()
	r.latcher.Poll(ctx)
	r.host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Endpoint: msp.EndpointWireServer, Path: StatusPath, Count: 2})
	r.latcher.Poll(ctx)
	r.latcher.Poll(ctx)
	if msg := r.latcher.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgStatusFailed) {
		t.Fatalf("during the failure: %q", msg)
	}
	epoch := r.latcher.Current().Epoch
	r.latcher.Poll(ctx)
	if msg := r.latcher.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgStatusRecovered+" - ") {
		t.Fatalf("after recovery: %q, want %q", msg, msp.KeyLatchMsgStatusRecovered)
	}
	if e := r.latcher.Current().Epoch; e != epoch {
		t.Errorf("recovery with nothing changed published epoch %d (was %d)", e, epoch)
	}
	n := len(r.statuses.all())
	r.latcher.Poll(ctx)
	if len(r.statuses.all()) != n {
		t.Errorf("a steady poll changed the status: %+v", r.statuses.all()[n:])
	}
}

// Refused attestations leave at most KeepUnattestedKeys key files besides
// the current and previous keys; the oldest go first, the latched key
// stays.
func TestRefusedAttestationsBounded(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	ctx := context.Background()
	r.latcher.Poll(ctx)
	current := r.latcher.Current().Key.GUID
	r.host.ResetKey()
	r.host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Status: 403, Endpoint: msp.EndpointWireServer, PathPrefix: KeyPath + "/"})
	for range 8 {
		r.latcher.Poll(ctx)
	}
	if msg := r.latcher.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgAttestFailed) {
		t.Fatalf("status %q", msg)
	}
	issued := r.host.IssuedKeys()
	if len(issued) < KeepUnattestedKeys+3 {
		t.Fatalf("host issued %d keys, want one per refused attestation", len(issued))
	}
	var want []string
	for _, k := range issued[len(issued)-KeepUnattestedKeys:] {
		want = append(want, k.GUID+".key")
	}
	want = append(want, current+".key", StateFileName)
	slices.Sort(want)
	if diff := cmp.Diff(want, keyFolder(t, r.store.Dir())); diff != "" {
		t.Errorf("key folder (-want +got):\n%s", diff)
	}
	if s := r.latcher.Current(); s.Key.GUID != current {
		t.Errorf("the latched key changed to %s", s.Key.GUID)
	}

	r.host.ClearFaults()
	r.latcher.Poll(ctx)
	if s := r.latcher.Current(); !s.Latched() || s.Key.GUID == current {
		t.Fatalf("no new key latched: %q %s", s.State, s.Key.GUID)
	}
	if st, err := r.store.LoadState(); err != nil || st.PreviousKeyGUID != current {
		t.Errorf("state after the new key: %+v, %v; want previous %s", st, err, current)
	}
}

func keyFolder(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// PruneKeys removes the oldest key files beyond the bound, never a kept
// one, and nothing that is not a regular <guid>.key file.
func TestPruneKeys(t *testing.T) {
	s := openTestStore(t, testStoreDir(t), nil)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	guid := func(i int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", i) }
	for i := range 6 {
		if err := s.Save(testKey(t, guid(i))); err != nil {
			t.Fatal(err)
		}
		// Names and ages disagree, so the order must come from the time.
		at := base.Add(time.Duration(5-i) * time.Hour)
		if err := os.Chtimes(s.KeyPath(guid(i)), at, at); err != nil {
			t.Fatal(err)
		}
	}
	writeRaw(t, filepath.Join(s.Dir(), "provisioned.tag"), []byte("x"), 0o600)
	writeRaw(t, s.StatePath(), []byte("{}"), 0o600)
	if err := os.Symlink("/nonexistent", filepath.Join(s.Dir(), guid(99)+".key")); err != nil {
		t.Fatal(err)
	}
	// guid(5) is the oldest and guid(0) the newest; guid(5) and guid(3)
	// are kept whatever their age.
	removed, err := s.PruneKeys([]string{guid(5), guid(3), ""}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{guid(4), guid(2)}, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	want := []string{guid(0) + ".key", guid(1) + ".key", guid(3) + ".key", guid(5) + ".key", guid(99) + ".key", StateFileName, "provisioned.tag"}
	if diff := cmp.Diff(want, keyFolder(t, s.Dir())); diff != "" {
		t.Errorf("folder (-want +got):\n%s", diff)
	}
	if removed, err := s.PruneKeys(nil, 4); err != nil || len(removed) != 0 {
		t.Errorf("within the bound: removed %v, %v", removed, err)
	}
}
