package keylatch

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

const enforceState = "WireServer Enforce -  IMDS Enforce - HostGA Enforce"

func TestFirstBootLatchesWithinThreePolls(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.latcher.Run(ctx) }()

	polls := 1
	for !r.latcher.Current().Latched() {
		ft := r.clock.next(t)
		if polls >= 3 {
			t.Fatalf("not latched after %d polls; status %+v", polls, r.latcher.Status())
		}
		r.clock.fire(ft)
		polls++
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}

	snap := r.latcher.Current()
	if snap.State != enforceState {
		t.Fatalf("state %q, want %q", snap.State, enforceState)
	}
	hk, ok := r.host.LatchedKey()
	if !ok || !snap.Key.Equal(hk) || snap.Signer == nil || snap.Signer.GUID() != hk.GUID {
		t.Fatal("snapshot key is not the key the host latched")
	}
	for _, ep := range msp.Endpoints {
		if snap.Mode(ep) != msp.ModeEnforce {
			t.Errorf("mode of %s = %s", ep, snap.Mode(ep))
		}
	}
	if diff := cmp.Diff([]msp.Endpoint{msp.EndpointWireServer, msp.EndpointIMDS, msp.EndpointHostGA}, r.redirect.last()); diff != "" {
		t.Fatalf("redirect set (-want +got):\n%s", diff)
	}
	// Upstream shows a plain id as <id>-useLocalFileRules-false, except
	// HostGA's, the raw WireServer id.
	if diff := cmp.Diff(map[msp.Endpoint]string{msp.EndpointWireServer: "ws-rules-useLocalFileRules-false", msp.EndpointIMDS: "imds-rules-useLocalFileRules-false", msp.EndpointHostGA: "ws-rules"}, snap.RuleIDs); diff != "" {
		t.Fatalf("rule ids (-want +got):\n%s", diff)
	}

	fi, err := os.Stat(r.store.KeyPath(hk.GUID))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(r.store.Dir())
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("key folder mode %v %v, want 0700", di.Mode().Perm(), err)
	}

	st := r.statuses.all()
	if len(st) == 0 || st[0].Message != msp.KeyLatchMsgStarted {
		t.Fatalf("first status %+v, want %q", st, msp.KeyLatchMsgStarted)
	}
	var attested bool
	for _, s := range st {
		attested = attested || (strings.HasPrefix(s.Message, msp.KeyLatchMsgAttested+" - ") && s.State == msp.ModuleRunning)
	}
	if !attested {
		t.Fatalf("no %q status in %+v", msp.KeyLatchMsgAttested, st)
	}
	if last := r.latcher.Status(); last.State != msp.ModuleStopped || last.Message != msp.KeyLatchMsgCancelled {
		t.Fatalf("after cancel: %+v", last)
	}
	assertNoSecret(t, hk, r.logs.String())
}

// TestWireRequests checks the exact header lines and bodies of §2.1–§2.2.
func TestWireRequests(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	r.latcher.Poll(context.Background())
	if !r.latcher.Current().Latched() {
		t.Fatalf("not latched: %+v", r.latcher.Status())
	}
	reqs := r.host.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want status, key, attestation", len(reqs))
	}
	type line struct{ Name, Value string }
	lines := func(rq msptest.Request) []line {
		var out []line
		for _, h := range rq.Header {
			v := h.Value
			if h.Name == msp.HeaderDate {
				if _, err := msp.ParseDate(v); err != nil {
					t.Errorf("date %q: %v", v, err)
				}
				v = "<date>"
			}
			if h.Name == msp.HeaderAuthorization {
				v = "<sig>"
			}
			out = append(out, line{h.Name, v})
		}
		return out
	}
	common := []line{
		{"x-ms-azure-host-date", "<date>"},
		{"host", "168.63.129.16"},
		{"x-ms-azure-host-claims", `{ "isRoot": "true"}`},
	}
	hk, _ := r.host.LatchedKey()
	tests := []struct {
		method, uri string
		headers     []line
		body        string
		signed      bool
	}{
		{"GET", "/secure-channel/status", append(append([]line{}, common...), line{"content-length", "0"}, line{"metadata", "True "}), "", false},
		{"POST", "/secure-channel/key", append(append([]line{}, common...), line{"content-length", "44"}, line{"metadata", "True "}, line{"content-type", "application/json"}),
			`{"authorizationScheme": "Azure-HMAC-SHA256"}`, false},
		{"POST", "/secure-channel/key/" + hk.GUID + "/key-attestation", append(append([]line{}, common...), line{"content-length", "0"}, line{"metadata", "True "}, line{"x-ms-azure-host-authorization", "<sig>"}), "", true},
	}
	for i, tt := range tests {
		got := reqs[i]
		if got.Method != tt.method || got.RawURI != tt.uri || string(got.Body) != tt.body {
			t.Errorf("request %d: %s %s %q", i, got.Method, got.RawURI, got.Body)
		}
		if diff := cmp.Diff(tt.headers, lines(got)); diff != "" {
			t.Errorf("request %d header lines (-want +got):\n%s", i, diff)
		}
		if got.Signed != tt.signed || got.SignatureValid != tt.signed {
			t.Errorf("request %d signed=%v valid=%v (%s)", i, got.Signed, got.SignatureValid, got.SignatureError)
		}
	}
}

func TestRestartReusesStoredKey(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	r.latcher.Poll(context.Background())
	first := r.latcher.Current()
	if !first.Latched() {
		t.Fatal("first latcher did not latch")
	}
	r.host.ResetRequests()

	// A new process: new client, new latcher, same folder.
	store2 := openTestStore(t, r.store.Dir(), nil)
	l2, err := NewLatcher(&LatcherOptions{Client: NewClient(&ClientOptions{Addr: r.host.WireServerAddr()}), Store: store2, Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	l2.Poll(context.Background())
	if got := l2.Current(); !got.Latched() || !got.Key.Equal(first.Key) {
		t.Fatalf("restarted latcher: state %q key %s", got.State, got.Key)
	}
	if n := len(r.host.RequestsTo("POST", "/secure-channel/key")); n != 0 {
		t.Fatalf("restart acquired %d keys, want 0", n)
	}
	if msg := l2.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgFoundLocal+" - ") {
		t.Fatalf("status %q", msg)
	}
}

func TestKeyResetAtHost(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	ctx := context.Background()
	r.latcher.Poll(ctx)
	old := r.latcher.Current()
	if !old.Latched() {
		t.Fatal("not latched")
	}
	sub, cancel := r.latcher.Subscribe()
	defer cancel()

	inc := r.host.ResetKey()
	// The first attempt at a new key fails: the old key keeps serving.
	r.host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Endpoint: msp.EndpointWireServer, Path: "/secure-channel/key", Status: 503, Count: 1})
	r.latcher.Poll(ctx)
	mid := r.latcher.Current()
	if !mid.Key.Equal(old.Key) || !mid.Latched() {
		t.Fatalf("after a failed acquisition the old key must keep serving; got %s", mid.Key)
	}
	if msg := r.latcher.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgAcquireFailed) {
		t.Fatalf("status %q, want prefix %q", msg, msp.KeyLatchMsgAcquireFailed)
	}

	r.latcher.Poll(ctx)
	now := r.latcher.Current()
	hk, ok := r.host.LatchedKey()
	if !ok || !now.Key.Equal(hk) || now.Key.GUID == old.Key.GUID {
		t.Fatal("the new key is not latched")
	}
	if now.Epoch <= mid.Epoch || now.KeyIncarnationID == nil || *now.KeyIncarnationID != inc {
		t.Fatalf("epoch %d (was %d), incarnation %v, want %d", now.Epoch, mid.Epoch, now.KeyIncarnationID, inc)
	}
	var got *Snapshot
	for {
		select {
		case s := <-sub:
			got = s
			continue
		default:
		}
		break
	}
	if got != now {
		t.Fatal("the subscriber did not get the newest snapshot")
	}
	// The new key signs requests the host accepts.
	if _, err := os.Stat(r.store.KeyPath(hk.GUID)); err != nil {
		t.Fatal(err)
	}
}

func TestHostFailuresRecover(t *testing.T) {
	onStatus := func(f msptest.Fault) msptest.Fault { f.Path = StatusPath; return f }
	tests := []struct {
		name       string
		fault      msptest.Fault
		wantPrefix string
	}{
		{"down", msptest.Fault{Kind: msptest.FaultDown}, msp.KeyLatchMsgStatusFailed},
		{"5xx", onStatus(msptest.Fault{Kind: msptest.FaultStatus, Status: 500}), msp.KeyLatchMsgStatusFailed},
		{"malformed json", onStatus(msptest.Fault{Kind: msptest.FaultMalformedJSON}), msp.KeyLatchMsgStatusFailed},
		{"xml body", onStatus(msptest.Fault{Kind: msptest.FaultXMLBody}), msp.KeyLatchMsgStatusFailed},
		{"wrong content type", onStatus(msptest.Fault{Kind: msptest.FaultWrongContentType}), msp.KeyLatchMsgStatusFailed},
		{"dropped", onStatus(msptest.Fault{Kind: msptest.FaultDrop}), msp.KeyLatchMsgStatusFailed},
		{"slow past the timeout", onStatus(msptest.Fault{Kind: msptest.FaultSlow, Delay: 2 * time.Second}), msp.KeyLatchMsgStatusFailed},
		{"acquire 5xx", msptest.Fault{Kind: msptest.FaultStatus, Status: 500, Path: KeyPath}, msp.KeyLatchMsgAcquireFailed},
		{"acquire malformed", msptest.Fault{Kind: msptest.FaultMalformedJSON, Path: KeyPath}, msp.KeyLatchMsgAcquireFailed},
		{"acquire xml", msptest.Fault{Kind: msptest.FaultXMLBody, Path: KeyPath}, msp.KeyLatchMsgAcquireFailed},
		{"attestation 5xx", msptest.Fault{Kind: msptest.FaultStatus, Status: 500, PathPrefix: KeyPath + "/"}, msp.KeyLatchMsgAttestFailed},
		{"attestation dropped", msptest.Fault{Kind: msptest.FaultDrop, PathPrefix: KeyPath + "/"}, msp.KeyLatchMsgAttestFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
			r.client.timeout = 300 * time.Millisecond
			f := tt.fault
			f.Endpoint = msp.EndpointWireServer
			r.host.SetFault(f)
			for range 2 {
				r.latcher.Poll(context.Background())
			}
			st := r.latcher.Status()
			if !strings.HasPrefix(st.Message, tt.wantPrefix) || st.State != msp.ModuleRunning {
				t.Fatalf("status %+v, want prefix %q", st, tt.wantPrefix)
			}
			// Never latched without a usable key. Once the status was
			// read, its rules apply while the key cannot be latched.
			s := r.latcher.Current()
			if s.State != msp.SecureChannelUnknown || s.Latched() || s.Key.Valid() || s.Signer != nil {
				t.Fatalf("during the failure: state %q epoch %d key %s", s.State, s.Epoch, s.Key)
			}
			statusRead := tt.wantPrefix != msp.KeyLatchMsgStatusFailed
			if got := s.Mode(msp.EndpointIMDS); statusRead != (got == msp.ModeEnforce) {
				t.Fatalf("during the failure (status read %v): IMDS mode %v in the snapshot", statusRead, got)
			}
			if !statusRead && s.Epoch != 0 {
				t.Fatalf("published epoch %d without a status", s.Epoch)
			}
			if r.redirect.last() != nil {
				t.Fatal("redirect programmed without a key")
			}
			for _, k := range r.host.IssuedKeys() {
				assertNoSecret(t, k, r.logs.String(), st.Message)
			}
			r.host.ClearFaults()
			r.latcher.Poll(context.Background())
			if !r.latcher.Current().Latched() {
				t.Fatalf("did not recover: %+v", r.latcher.Status())
			}
		})
	}
}

func TestDisabledClearsKeyAndRedirect(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	ctx := context.Background()
	r.latcher.Poll(ctx)
	if !r.latcher.Current().Latched() {
		t.Fatal("not latched")
	}
	r.host.SetEnabled(false)
	var latchedCalls int
	r.latcher.onLatched = func() { latchedCalls++ }
	r.latcher.Poll(ctx)
	r.latcher.Poll(ctx)
	if latchedCalls != 1 {
		t.Fatalf("OnLatched called %d times for one change to disabled, want 1", latchedCalls)
	}
	s := r.latcher.Current()
	if s.State != msp.SecureChannelDisabled || s.Key.Valid() || s.Signer != nil || s.Latched() {
		t.Fatalf("disabled snapshot: state %q key %s", s.State, s.Key)
	}
	if got := r.redirect.last(); len(got) != 0 {
		t.Fatalf("redirect set %v, want empty", got)
	}
	if msg := r.latcher.Status().Message; !strings.HasPrefix(msg, msp.KeyLatchMsgDisabled+" - ") {
		t.Fatalf("status %q", msg)
	}
	// Files on disk are kept.
	hk, _ := r.host.LatchedKey()
	if _, err := os.Stat(r.store.KeyPath(hk.GUID)); err != nil {
		t.Fatal(err)
	}
}

func TestV1Status(t *testing.T) {
	r := newRig(t, &msptest.Options{StatusVersion: "1.0", V1State: "Wireserver"}, nil)
	r.latcher.Poll(context.Background())
	s := r.latcher.Current()
	if s.State != "wireserver" || !s.Latched() {
		t.Fatalf("state %q", s.State)
	}
	want := map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce, msp.EndpointIMDS: msp.ModeAudit, msp.EndpointHostGA: msp.ModeEnforce}
	for ep, m := range want {
		if s.Mode(ep) != m {
			t.Errorf("%s mode %s, want %s", ep, s.Mode(ep), m)
		}
	}
	// Without rules every request is allowed, as upstream.
	d := s.Policy.Evaluate(msp.EndpointIMDS, &msp.Request{Method: "GET", RawURI: "/metadata/instance", Claims: &msp.Claims{}})
	if !d.Verdict.Forwarded() {
		t.Fatalf("v1 IMDS request not forwarded: %+v", d)
	}
}

func TestCadence(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, func(o *LatcherOptions) { o.PollInterval = 7 * time.Second })
	r.host.SetFault(msptest.Fault{Kind: msptest.FaultDown, Endpoint: msp.EndpointWireServer})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.latcher.Run(ctx) }()

	// Unknown, early: every second.
	for range 3 {
		ft := r.clock.next(t)
		if ft.d != FrequentPollInterval {
			t.Fatalf("sleep %v while Unknown in the first minutes, want 1s", ft.d)
		}
		r.clock.fire(ft)
	}
	// Past five minutes of uptime, still Unknown: the configured interval.
	ft := r.clock.next(t)
	r.clock.advance(FrequentPollWindow)
	r.clock.fire(ft)
	if ft := r.clock.next(t); ft.d != 7*time.Second {
		t.Fatalf("sleep %v after the frequent window, want 7s", ft.d)
	} else {
		// A wake-up while Unknown polls at once; the host is back.
		r.host.ClearFaults()
		r.latcher.Wake()
	}
	ft = r.clock.next(t)
	if !r.latcher.Current().Latched() {
		t.Fatalf("wake-up did not poll: %+v", r.latcher.Status())
	}
	if ft.d != 7*time.Second {
		t.Fatalf("sleep %v when latched, want 7s", ft.d)
	}
	cancel()
	<-done
}

func TestEarlyLatchedUsesInterval(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.latcher.Run(ctx) }()
	if ft := r.clock.next(t); ft.d != DefaultPollInterval {
		t.Fatalf("sleep %v once latched, want the default 15s", ft.d)
	}
	cancel()
	<-done
}

func TestRedirectRetriedAfterFailure(t *testing.T) {
	r := newRig(t, &msptest.Options{Rules: enforceAll()}, nil)
	r.redirect.fail = true
	r.latcher.Poll(context.Background())
	if r.redirect.last() != nil {
		t.Fatal("a failed update was recorded")
	}
	r.redirect.mu.Lock()
	r.redirect.fail = false
	r.redirect.mu.Unlock()
	r.latcher.Poll(context.Background())
	if len(r.redirect.last()) != 3 {
		t.Fatalf("redirect not retried: %v", r.redirect.last())
	}
	n := len(r.redirect.sets)
	r.latcher.Poll(context.Background())
	if len(r.redirect.sets) != n {
		t.Fatal("an unchanged redirect set was programmed again")
	}
}

func TestRedirectSet(t *testing.T) {
	p, err := msp.NewPolicy(map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeAudit}, msp.EndpointWireServer: {Mode: msp.ModeDisabled},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		s    *Snapshot
		want []msp.Endpoint
	}{
		{"nil", nil, nil},
		{"unknown", &Snapshot{State: msp.SecureChannelUnknown, Policy: p}, nil},
		{"imds audit only", &Snapshot{State: "WireServer Disabled -  IMDS Audit - HostGA Disabled", Policy: p}, []msp.Endpoint{msp.EndpointIMDS}},
		{"disabled", &Snapshot{State: msp.SecureChannelDisabled}, nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, RedirectSet(tt.s)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestNewLatcherNeedsClientAndStore(t *testing.T) {
	if _, err := NewLatcher(nil); err == nil {
		t.Fatal("nil options accepted")
	}
	if _, err := NewLatcher(&LatcherOptions{Client: NewClient(nil)}); err == nil {
		t.Fatal("missing store accepted")
	}
}

func TestWake(t *testing.T) {
	latchedCalls := make(chan struct{}, 16)
	r := newRig(t, &msptest.Options{}, func(o *LatcherOptions) {
		o.OnLatched = func() { latchedCalls <- struct{}{} }
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.latcher.Run(ctx) }()

	// The host starts disabled.
	r.clock.next(t)
	if s := r.latcher.Current(); s.State != msp.SecureChannelDisabled {
		t.Fatalf("state %q", s.State)
	}
	<-latchedCalls
	before := len(r.host.RequestsTo("GET", StatusPath))
	sub, unsub := r.latcher.Subscribe()
	defer unsub()

	// Wake while disabled: back to Unknown and an immediate poll.
	r.latcher.Wake()
	if s := <-sub; s.State != msp.SecureChannelUnknown {
		t.Fatalf("wake while disabled published %q, want Unknown", s.State)
	}
	ft := r.clock.next(t)
	if n := len(r.host.RequestsTo("GET", StatusPath)); n != before+1 {
		t.Fatalf("status polls %d, want %d", n, before+1)
	}

	// Enable and let it latch on the next tick.
	r.host.SetModes(map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce})
	r.clock.fire(ft)
	ft = r.clock.next(t)
	if !r.latcher.Current().Latched() {
		t.Fatalf("not latched: %+v", r.latcher.Status())
	}
	drain := func() int {
		n := 0
		for {
			select {
			case <-latchedCalls:
				n++
			default:
				return n
			}
		}
	}
	drain()
	polls := len(r.host.RequestsTo("GET", StatusPath))

	// Wake while latched: OnLatched, no poll, the same sleep goes on.
	r.latcher.Wake()
	select {
	case <-latchedCalls:
	case <-time.After(5 * time.Second):
		t.Fatal("wake while latched did not call OnLatched")
	}
	if n := len(r.host.RequestsTo("GET", StatusPath)); n != polls {
		t.Fatalf("wake while latched polled (%d, was %d)", n, polls)
	}
	r.clock.fire(ft)
	r.clock.next(t)
	if n := len(r.host.RequestsTo("GET", StatusPath)); n != polls+1 {
		t.Fatalf("the interrupted sleep did not end in a poll")
	}
	cancel()
	<-done
}

// Recheck ends the sleep with a poll even when latched (Wake does not):
// after a key reset at the host, the proxy's first rejected signature gets
// the new key latched without waiting for the poll interval.
func TestRecheckPollsWhileLatched(t *testing.T) {
	r := newRig(t, &msptest.Options{}, nil)
	r.host.SetModes(map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce, msp.EndpointIMDS: msp.ModeEnforce})
	ctx := context.Background()
	r.run(t)
	r.clock.next(t)
	old := r.latcher.Current()
	if !old.Latched() || !old.Key.Valid() {
		t.Fatalf("not latched: %+v", r.latcher.Status())
	}
	polls := len(r.host.RequestsTo("GET", StatusPath))
	sub, unsub := r.latcher.Subscribe()
	defer unsub()

	r.host.ResetKey()
	r.latcher.Recheck()
	r.latcher.Recheck() // collapses into the pending one
	r.clock.next(t)     // the sleep ended without its timer firing
	if n := len(r.host.RequestsTo("GET", StatusPath)); n != polls+1 {
		t.Fatalf("status polls %d, want %d", n, polls+1)
	}
	var second *Snapshot
	select {
	case second = <-sub:
		if !second.Key.Valid() || second.Key.GUID == old.Key.GUID || second.Epoch <= old.Epoch {
			t.Fatalf("after recheck: key %s epoch %d (was %s, %d)", second.Key.GUID, second.Epoch, old.Key.GUID, old.Epoch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no new snapshot after recheck")
	}

	// WaitNewKey: at once when the latch already moved on; after a recheck
	// when it has not; nil when nothing comes in time.
	ctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if s := r.latcher.WaitNewKey(ctx2, old); s == nil || s.Key.GUID != second.Key.GUID {
		t.Fatalf("WaitNewKey(old) = %v", s)
	}
	r.host.ResetKey()
	got := make(chan *Snapshot, 1)
	go func() { got <- r.latcher.WaitNewKey(ctx2, second) }()
	r.clock.next(t) // the recheck ended the sleep with a poll
	if s := <-got; s == nil || s.Key.GUID == second.Key.GUID {
		t.Fatalf("WaitNewKey(second) = %v", s)
	}
	short, cancel3 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel3()
	if s := r.latcher.WaitNewKey(short, r.latcher.Current()); s != nil {
		t.Fatalf("WaitNewKey without a reset = %v, want nil", s.Key.GUID)
	}

	// A refusal under the key the host still names: the poll the recheck
	// starts finds the same key, and WaitNewKey says so when that poll
	// ends, not when its context does (issue 19: a 401 must not stall the
	// client for the whole refresh timeout).
	long, cancel4 := context.WithTimeout(ctx, time.Minute)
	defer cancel4()
	before := len(r.host.RequestsTo("GET", StatusPath))
	if s := r.latcher.WaitNewKey(long, r.latcher.Current()); s != nil || long.Err() != nil {
		t.Fatalf("WaitNewKey under the current key = %v, ctx %v; want nil before the deadline", s, long.Err())
	}
	if n := len(r.host.RequestsTo("GET", StatusPath)); n <= before {
		t.Errorf("status polls %d, want more than %d: the answer came without asking the host", n, before)
	}
}

// WaitKnown returns once the first poll has latched (or found the channel
// disabled), and nil if ctx ends before.
func TestWaitKnown(t *testing.T) {
	r := newRig(t, &msptest.Options{}, nil)
	r.host.SetModes(map[msp.Endpoint]msp.Mode{msp.EndpointIMDS: msp.ModeEnforce})
	short, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if s := r.latcher.WaitKnown(short); s != nil {
		t.Fatalf("before any poll: %q", s.State)
	}
	got := make(chan *Snapshot, 1)
	go func() { got <- r.latcher.WaitKnown(context.Background()) }()
	r.run(t)
	select {
	case s := <-got:
		if s == nil || !s.Latched() || !s.Key.Valid() {
			t.Fatalf("WaitKnown = %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitKnown did not return after the first poll")
	}
	if s := r.latcher.WaitKnown(short); s == nil {
		t.Fatal("WaitKnown when already known = nil")
	}
}
