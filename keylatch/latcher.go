package keylatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// Status is the KeyKeeper module status: a state and the last message,
// whose prefixes are those of docs/protocol.md §6.2.
type Status struct {
	State   msp.ModuleState
	Message string
}

// Poll intervals of docs/protocol.md §2.6.
const (
	DefaultPollInterval = 15 * time.Second
	// FrequentPollInterval and FrequentPollWindow: while the state is
	// Unknown during the first five minutes, the status is polled every
	// second so a fresh VM latches quickly (§2.6).
	FrequentPollInterval = time.Second
	FrequentPollWindow   = 5 * time.Minute
)

// Clock is the time source of the latcher; tests inject a fake one so the
// poll cadence can be checked without sleeping.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RedirectPolicy is what the agent programs the eBPF redirect from. The
// latcher calls it with RedirectSet of each new snapshot (and again after a
// failure), so the redirect always follows the published modes.
type RedirectPolicy interface {
	SetRedirect(ctx context.Context, endpoints []msp.Endpoint) error
}

// RedirectSet returns the endpoints whose traffic must be redirected to the
// proxy under s: those whose mode is not Disabled. It is empty while the
// state is Unknown, so nothing is redirected before the first status.
func RedirectSet(s *Snapshot) []msp.Endpoint {
	if s == nil || s.State == msp.SecureChannelUnknown {
		return nil
	}
	var out []msp.Endpoint
	for _, ep := range msp.Endpoints {
		if s.Mode(ep) != msp.ModeDisabled {
			out = append(out, ep)
		}
	}
	return out
}

// LatcherOptions configure NewLatcher. Client and Store are required.
type LatcherOptions struct {
	Client *Client
	Store  *Store
	// PollInterval is pollKeyStatusIntervalInSeconds; 15 s if zero.
	PollInterval time.Duration
	// Clock; the real clock if nil.
	Clock Clock
	// Uptime returns the process uptime, which decides the frequent-poll
	// window and the " - <ms>" suffix; time since NewLatcher if nil.
	Uptime func() time.Duration
	// LocalRules enables the local rules files of §4.8 (read from
	// Store.RulesDir()) for endpoints whose remote id asks for them.
	LocalRules bool
	// EvaluatorOptions are passed to msp.NewPolicy.
	EvaluatorOptions *msp.EvaluatorOptions
	// Redirect, if set, is told the redirect set of every new snapshot.
	Redirect RedirectPolicy
	// OnStatus, if set, is called synchronously with every change of the
	// module status. It must not block.
	OnStatus func(Status)
	// OnLatched, if set, is called where upstream calls key_latched: a key
	// became usable, the state became disabled, or a wake-up came while
	// latched. Provisioning uses it. It must not block.
	OnLatched func()
	// Logger; nil discards. Key material is never logged.
	Logger *slog.Logger
}

// Latcher runs the KeyKeeper loop of docs/protocol.md §2.6–§2.7: it polls the
// secure-channel status, latches a key (from the store or by acquiring and
// attesting one), and publishes an immutable Snapshot whenever the state,
// the rules or the key change. Current and Subscribe are safe for
// concurrent use; Run must be called once.
//
// One deliberate difference from upstream: a state that needs a key is
// published only once a key is usable. Upstream stores the new state before
// acquiring the key, so it can report "latched" while acquisition keeps
// failing; here the snapshot stays Unknown (or keeps the previous key, which
// upstream also signs with until a new one is attested).
//
// Two more: every published snapshot is also kept on disk (LatchState) and
// a new Latcher starts from it, where upstream starts from Unknown and
// forwards unsigned until its first poll succeeds; and the key files
// refused attestations leave are pruned (Store.PruneKeys).
type Latcher struct {
	client    *Client
	store     *Store
	interval  time.Duration
	clock     Clock
	uptime    func() time.Duration
	local     bool
	evalOpts  *msp.EvaluatorOptions
	redirect  RedirectPolicy
	onStatus  func(Status)
	onLatched func()
	log       *slog.Logger

	cur     atomic.Pointer[Snapshot]
	wake    chan struct{}
	recheck chan struct{}

	// polls counts the polls started and finished; pollDone is closed and
	// replaced when one finishes, so that WaitNewKey learns the outcome of
	// the poll it asked for instead of waiting out its deadline.
	pollMu       sync.Mutex
	pollsStarted uint64
	pollsDone    uint64
	pollDone     chan struct{}

	mu     sync.Mutex
	subs   map[chan *Snapshot]struct{}
	status Status

	// Owned by the Run goroutine.
	key           msp.Key
	lastText      string
	lastItems     []byte
	redirectSet   []msp.Endpoint
	redirectValid bool

	// lastGUID and prevGUID are the latest latched key and the one before
	// it, whose files pruning keeps; failing is set while status polls fail.
	lastGUID, prevGUID string
	failing            bool
}

// NewLatcher returns a latcher whose current snapshot is the state the
// store kept from an earlier run (Restored, epoch 1), or Unknown (epoch 0)
// when there is none or it is unusable.
func NewLatcher(opts *LatcherOptions) (*Latcher, error) {
	if opts == nil || opts.Client == nil || opts.Store == nil {
		return nil, errors.New("keylatch: LatcherOptions.Client and Store are required")
	}
	l := &Latcher{
		client: opts.Client, store: opts.Store, interval: opts.PollInterval, clock: opts.Clock,
		uptime: opts.Uptime, local: opts.LocalRules, evalOpts: opts.EvaluatorOptions,
		redirect: opts.Redirect, onStatus: opts.OnStatus, onLatched: opts.OnLatched, log: opts.Logger,
		wake: make(chan struct{}, 1), recheck: make(chan struct{}, 1), pollDone: make(chan struct{}),
		subs: map[chan *Snapshot]struct{}{},
	}
	if l.interval <= 0 {
		l.interval = DefaultPollInterval
	}
	if l.clock == nil {
		l.clock = realClock{}
	}
	if l.uptime == nil {
		start := l.clock.Now()
		l.uptime = func() time.Duration { return l.clock.Now().Sub(start) }
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.cur.Store(&Snapshot{State: msp.SecureChannelUnknown, Updated: l.clock.Now()})
	l.restore()
	return l, nil
}

// restore publishes the state an earlier run kept, marked Restored, so a
// restarted agent signs with the latched key and knows the endpoints'
// modes before the host answers. Without a usable state file the latcher
// starts as on first boot.
func (l *Latcher) restore() {
	st, err := l.store.LoadState()
	if err != nil {
		if !errors.Is(err, ErrNoState) {
			l.log.Warn("latch state file unusable; starting as on first boot", "error", err)
		}
		return
	}
	l.lastGUID, l.prevGUID = st.KeyGUID, st.PreviousKeyGUID
	s := &Snapshot{State: st.State, Policy: l.compile(st.Endpoints), Items: st.Endpoints, RuleIDs: st.RuleIDs(), Restored: true}
	if st.KeyIncarnationID != nil {
		v := *st.KeyIncarnationID
		s.KeyIncarnationID = &v
	}
	if st.KeyGUID != "" && st.State != msp.SecureChannelDisabled {
		k, err := l.store.Load(st.KeyGUID)
		if err == nil {
			s.Signer, err = msp.NewSigner(k)
		}
		if err != nil {
			// The modes still apply: an endpoint in Enforce is then
			// refused rather than sent unsigned.
			l.log.Warn("latched key of the stored state unusable", "guid", st.KeyGUID, "error", err)
			s.Signer = nil
		} else {
			s.Key = k
		}
	}
	l.publish(s)
}

// Current returns the latest snapshot. Read it once per request and use
// only that one, so key and rules always belong together.
func (l *Latcher) Current() *Snapshot { return l.cur.Load() }

// Subscribe returns a channel that receives every new snapshot; a slow
// reader gets only the latest. cancel stops the subscription.
func (l *Latcher) Subscribe() (ch <-chan *Snapshot, cancel func()) {
	c := make(chan *Snapshot, 1)
	l.mu.Lock()
	l.subs[c] = struct{}{}
	l.mu.Unlock()
	return c, func() {
		l.mu.Lock()
		delete(l.subs, c)
		l.mu.Unlock()
	}
}

// Status returns the module status.
func (l *Latcher) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// HostNow returns the current time on the host's clock, for
// x-ms-azure-host-date.
func (l *Latcher) HostNow() time.Time { return l.client.Now() }

// Wake asks the loop to act now, as the /provision notify does: in the
// Unknown or disabled state it resets to Unknown and polls at once; when
// latched it only reports OnLatched.
func (l *Latcher) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Recheck asks the loop to poll the host now, whatever the state: the
// proxy calls it when the host rejects a signature, which after a key reset
// at the host is the first sign that the latched key is stale. Calls made
// while a poll is pending collapse into it.
func (l *Latcher) Recheck() {
	select {
	case l.recheck <- struct{}{}:
	default:
	}
}

// WaitNewKey returns a snapshot whose key differs from stale's as soon as
// the latch has one. If it has none, it asks for a poll now (Recheck) and
// returns what that poll found: the new key, or nil at once when the host
// still names the same key or could not be asked. It also returns nil when
// ctx ends first. It is what a proxy calls when the host refuses a
// signature made with stale's key: a refusal under the current key is
// answered without waiting out ctx's deadline.
func (l *Latcher) WaitNewKey(ctx context.Context, stale *Snapshot) *Snapshot {
	fresh := func(s *Snapshot) bool {
		return s != nil && s.Key.Valid() && s.Signer != nil && (stale == nil || s.Key.GUID != stale.Key.GUID)
	}
	ch, cancel := l.Subscribe()
	defer cancel()
	if s := l.Current(); fresh(s) {
		return s
	}
	// A poll already under way may have asked the host before the
	// refusal: only one that starts after this point can answer.
	l.pollMu.Lock()
	target := l.pollsStarted + 1
	l.pollMu.Unlock()
	l.Recheck()
	for {
		l.pollMu.Lock()
		done, polled := l.pollsDone >= target, l.pollDone
		l.pollMu.Unlock()
		if done {
			if s := l.Current(); fresh(s) {
				return s
			}
			return nil
		}
		select {
		case s := <-ch:
			if fresh(s) {
				return s
			}
		case <-polled:
		case <-ctx.Done():
			return nil
		}
	}
}

// WaitKnown returns the current snapshot as soon as its state is no longer
// Unknown, that is once the first status poll has succeeded (from a stored
// key, a fresh one, or a disabled channel); nil when ctx ends first. A
// restarting agent whose pinned redirect is already live uses it to hold
// the first requests instead of forwarding them unsigned.
func (l *Latcher) WaitKnown(ctx context.Context) *Snapshot {
	known := func(s *Snapshot) bool { return s != nil && s.State != msp.SecureChannelUnknown }
	return l.waitFor(ctx, known)
}

// waitFor returns the first snapshot, current or published later, for
// which ok is true; nil when ctx ends first. ask, if set, runs once when
// the current snapshot does not do.
func (l *Latcher) waitFor(ctx context.Context, ok func(*Snapshot) bool) *Snapshot {
	ch, cancel := l.Subscribe()
	defer cancel()
	// Checked after subscribing, so a snapshot published in between is
	// not missed.
	if s := l.Current(); ok(s) {
		return s
	}
	for {
		select {
		case s := <-ch:
			if ok(s) {
				return s
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Run polls until ctx ends. The first poll happens at once.
func (l *Latcher) Run(ctx context.Context) error {
	l.setStatus(msp.ModuleRunning, msp.KeyLatchMsgStarted)
	if cur := l.Current(); cur.Restored {
		l.setMessage(l.elapsed(msp.KeyLatchMsgRestored))
		// Only a latched state is programmed: an empty set would remove
		// a pinned redirect that still protects the endpoints.
		if cur.Latched() {
			l.applyRedirect(ctx)
		}
	}
	for {
		l.Poll(ctx)
		if err := l.sleep(ctx); err != nil {
			l.setStatus(msp.ModuleStopped, msp.KeyLatchMsgCancelled)
			return err
		}
	}
}

// nextInterval is the poll cadence of §2.6.
func (l *Latcher) nextInterval() time.Duration {
	if cur := l.Current(); (cur.State == msp.SecureChannelUnknown || cur.Restored) && l.uptime() < FrequentPollWindow {
		return FrequentPollInterval
	}
	return l.interval
}

func (l *Latcher) sleep(ctx context.Context) error {
	timer := l.clock.After(l.nextInterval())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			return nil
		case <-l.recheck:
			return nil
		case <-l.wake:
			cur := l.Current()
			if cur.Restored || cur.State == msp.SecureChannelUnknown || cur.State == msp.SecureChannelDisabled {
				if cur.State == msp.SecureChannelDisabled && !cur.Restored {
					l.publish(&Snapshot{State: msp.SecureChannelUnknown})
				}
				return nil
			}
			if l.onLatched != nil {
				l.onLatched()
			}
		}
	}
}

func (l *Latcher) setStatus(state msp.ModuleState, msg string) {
	l.mu.Lock()
	changed := l.status.State != state || l.status.Message != msg
	l.status = Status{State: state, Message: msg}
	l.mu.Unlock()
	if changed {
		l.log.Info("key latch status", "state", string(state), "message", msg)
		if l.onStatus != nil {
			l.onStatus(Status{State: state, Message: msg})
		}
	}
}

func (l *Latcher) setMessage(msg string) { l.setStatus(msp.ModuleRunning, msg) }

func (l *Latcher) elapsed(msg string) string {
	return fmt.Sprintf("%s - %d", msg, l.uptime().Milliseconds())
}

// Poll runs one iteration of the loop: fetch the status, compute the
// rules, latch a key if needed, publish and program the redirect. Run
// calls it; tests may call it directly instead of Run, never both at once.
func (l *Latcher) Poll(ctx context.Context) {
	l.pollMu.Lock()
	l.pollsStarted++
	l.pollMu.Unlock()
	defer func() {
		l.pollMu.Lock()
		l.pollsDone++
		close(l.pollDone)
		l.pollDone = make(chan struct{})
		l.pollMu.Unlock()
	}()
	st, err := l.client.GetStatus(ctx)
	if err != nil {
		l.failing = true
		l.setMessage(msp.KeyLatchMsgStatusFailed + err.Error())
		return
	}
	if l.failing {
		// Later steps of this poll may say more; without them the
		// failure would stay the module's message.
		l.failing = false
		l.setMessage(l.elapsed(msp.KeyLatchMsgStatusRecovered))
	}
	if text := st.String(); text != l.lastText {
		l.log.Info("Got key status successfully: " + text + ".")
		l.lastText = text
	} else {
		l.log.Debug("Got key status successfully: " + text + ".")
	}

	state := st.StateString()
	items, ruleIDs := l.items(st)
	// The items' JSON tells whether the rules changed; they are compiled
	// only when a new snapshot is published, not on every poll.
	itemsJSON, _ := json.Marshal(items)

	if state == msp.SecureChannelDisabled {
		// The in-memory key is dropped; files on disk are kept.
		l.key = msp.Key{}
		cur := l.Current()
		changed := cur.State != msp.SecureChannelDisabled || cur.Restored
		if changed {
			l.setMessage(l.elapsed(msp.KeyLatchMsgDisabled))
		}
		l.maybePublish(state, items, itemsJSON, ruleIDs, st.KeyIncarnationID)
		if changed {
			// Provisioning can finish without a key.
			l.latched()
		}
		l.applyRedirect(ctx)
		return
	}

	if st.KeyGUID == nil || *st.KeyGUID != l.key.GUID || !l.key.Valid() {
		if !l.latchKey(ctx, st.KeyGUID) && !l.key.Valid() {
			// Never publish a latched state without a usable key. The
			// rules are known, though, and apply already (upstream
			// updates them before it acquires a key): a proxy whose
			// pinned redirect is live meanwhile denies what they deny
			// instead of forwarding everything unsigned.
			l.maybePublish(msp.SecureChannelUnknown, items, itemsJSON, ruleIDs, st.KeyIncarnationID)
			return
		}
	}
	l.maybePublish(state, items, itemsJSON, ruleIDs, st.KeyIncarnationID)
	l.applyRedirect(ctx)
}

// latchKey makes a key current: the stored one the status names, or a new
// one acquired, stored, re-read and attested. It reports success; on
// failure the previous key (if any) stays current.
func (l *Latcher) latchKey(ctx context.Context, guid *string) bool {
	if guid != nil {
		k, err := l.store.Load(*guid)
		if err == nil {
			l.setKey(k)
			l.setMessage(l.elapsed(msp.KeyLatchMsgFoundLocal))
			l.latched()
			return true
		}
		if !errors.Is(err, ErrKeyNotFound) {
			// Corrupt, insecure or unreadable: report it and fetch a new
			// key rather than trust the file.
			l.log.Warn("stored key unusable; acquiring a new one", "guid", *guid, "error", err)
		}
	}
	k, err := l.client.AcquireKey(ctx)
	if err != nil {
		l.setMessage(msp.KeyLatchMsgAcquireFailed + err.Error())
		return false
	}
	if err := l.store.Save(k); err != nil {
		l.setMessage(msp.KeyLatchMsgSaveFailed + err.Error())
		return false
	}
	l.pruneKeys(guid)
	back, err := l.store.Load(k.GUID)
	if err == nil && !back.Equal(k) {
		err = ErrKeyMismatch
	}
	if err != nil {
		l.setMessage(msp.KeyLatchMsgCheckFailed + k.GUID + "' details saved locally: " + err.Error() + ".")
		return false
	}
	if err := l.client.AttestKey(ctx, k); err != nil {
		l.setMessage(msp.KeyLatchMsgAttestFailed + err.Error())
		return false
	}
	l.setKey(k)
	l.setMessage(l.elapsed(msp.KeyLatchMsgAttested))
	l.log.Info("key latched", "key", k)
	l.latched()
	return true
}

// setKey makes k the in-memory key and remembers the one it replaces.
func (l *Latcher) setKey(k msp.Key) {
	if l.lastGUID != "" && l.lastGUID != k.GUID {
		l.prevGUID = l.lastGUID
	}
	l.lastGUID = k.GUID
	l.key = k
}

// pruneKeys bounds the key files after a new one was saved: every refused
// attestation leaves one. The current and previous keys, and the one the
// host's status names, are kept, with the newest KeepUnattestedKeys others
// (the key just saved among them).
func (l *Latcher) pruneKeys(named *string) {
	keep := []string{l.key.GUID, l.lastGUID, l.prevGUID}
	if named != nil {
		keep = append(keep, *named)
	}
	removed, err := l.store.PruneKeys(keep, KeepUnattestedKeys)
	if len(removed) > 0 {
		l.log.Info("removed unattested key files", "guids", removed)
	}
	if err != nil {
		l.log.Warn("pruning key files", "error", err)
	}
}

func (l *Latcher) latched() {
	if l.onLatched != nil {
		l.onLatched()
	}
}

// items returns each endpoint's effective rule set and its id.
func (l *Latcher) items(st *KeyStatus) (map[msp.Endpoint]*msp.AuthorizationItem, map[msp.Endpoint]string) {
	items := map[msp.Endpoint]*msp.AuthorizationItem{}
	ids := map[msp.Endpoint]string{}
	if st.StateString() == msp.SecureChannelDisabled {
		return items, ids
	}
	if st.Version != "2.0" {
		// v1.0 carries no rules: the modes come from the state and, as
		// upstream without rules, every request is allowed.
		for _, ep := range msp.Endpoints {
			if m := st.Mode(ep); m != msp.ModeDisabled {
				items[ep] = &msp.AuthorizationItem{Mode: m, DefaultAccess: msp.AccessAllow}
			}
		}
		return items, ids
	}
	displayed := func(r *msp.AuthorizationItem) *msp.AuthorizationItem {
		n := *r
		n.ID = DisplayID(r.ID)
		return &n
	}
	for _, e := range [...]struct {
		ep   msp.Endpoint
		si   *StatusItem
		file string
	}{
		{msp.EndpointWireServer, st.AuthorizationRules.WireServer, WireServerRulesFile},
		{msp.EndpointIMDS, st.AuthorizationRules.IMDS, IMDSRulesFile},
	} {
		r, err := e.si.Item()
		if err != nil {
			l.log.Error("unparseable mode in status; endpoint treated as Disabled", "endpoint", e.ep.String(), "error", err)
		}
		if r == nil {
			continue
		}
		var it *msp.AuthorizationItem
		if l.local {
			res := ApplyLocalRules(r, e.file, l.store.ReadRulesFile)
			if res.Err != nil {
				l.log.Error("local rules file unusable; endpoint fails closed", "endpoint", e.ep.String(), "error", res.Err)
			}
			it = res.Item
		} else {
			it = displayed(r)
		}
		items[e.ep], ids[e.ep] = it, it.ID
		if e.ep == msp.EndpointWireServer {
			// HostGA uses the remote WireServer item as is, its raw id
			// included, never local rules (§2.5), as upstream.
			hostGA := *r
			items[msp.EndpointHostGA], ids[msp.EndpointHostGA] = &hostGA, r.ID
		}
	}
	return items, ids
}

// compile builds the policy; an endpoint whose rules cannot be compiled
// fails closed (deny by default, its mode kept) instead of losing its
// rules silently.
func (l *Latcher) compile(items map[msp.Endpoint]*msp.AuthorizationItem) *msp.Policy {
	p, err := msp.NewPolicy(items, l.evalOpts)
	if err == nil {
		return p
	}
	fixed := map[msp.Endpoint]*msp.AuthorizationItem{}
	for ep, it := range items {
		if _, err := msp.Compile(ep, it, l.evalOpts); err != nil {
			l.log.Error("rules do not compile; endpoint fails closed", "endpoint", ep.String(), "error", err)
			it = FailClosed(it, it.ID)
		}
		fixed[ep] = it
	}
	p, err = msp.NewPolicy(fixed, l.evalOpts)
	if err != nil {
		// Fail-closed items have no rules, so this cannot fail; if it ever
		// does, deny everything rather than run without rules.
		l.log.Error("fail-closed rules do not compile", "error", err)
		all := map[msp.Endpoint]*msp.AuthorizationItem{}
		for ep, it := range items {
			all[ep] = &msp.AuthorizationItem{Mode: it.Mode, DefaultAccess: msp.AccessDeny, ID: it.ID}
		}
		p, _ = msp.NewPolicy(all, nil)
	}
	return p
}

func (l *Latcher) maybePublish(state string, items map[msp.Endpoint]*msp.AuthorizationItem, itemsJSON []byte, ruleIDs map[msp.Endpoint]string, inc *uint32) {
	prev := l.Current()
	sameInc := (prev.KeyIncarnationID == nil) == (inc == nil) && (inc == nil || *inc == *prev.KeyIncarnationID)
	if prev.State == state && prev.Key.Equal(l.key) && sameInc && bytes.Equal(l.lastItems, itemsJSON) && prev.Epoch > 0 && !prev.Restored {
		return
	}
	l.lastItems = itemsJSON
	s := &Snapshot{State: state, Policy: l.compile(items), Items: items, Key: l.key, RuleIDs: ruleIDs}
	if inc != nil {
		v := *inc
		s.KeyIncarnationID = &v
	}
	if l.key.Valid() {
		signer, err := msp.NewSigner(l.key)
		if err != nil {
			l.log.Error("cannot build signer", "key", l.key, "error", err)
		}
		s.Signer = signer
	}
	l.publish(s)
	l.persist(s)
}

// persist keeps what s says on disk for the next start. A failure only
// costs that start its head start, so it is logged, not reported.
func (l *Latcher) persist(s *Snapshot) {
	st := &LatchState{Version: StateFileVersion, State: s.State, KeyIncarnationID: s.KeyIncarnationID,
		PreviousKeyGUID: l.prevGUID, Endpoints: s.Items, Saved: s.Updated}
	if s.Key.Valid() {
		st.KeyGUID = s.Key.GUID
	}
	if st.PreviousKeyGUID == st.KeyGUID {
		st.PreviousKeyGUID = ""
	}
	if err := l.store.SaveState(st); err != nil {
		l.log.Warn("saving the latch state", "error", err)
	}
}

func (l *Latcher) publish(s *Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.Epoch = l.cur.Load().Epoch + 1
	s.Updated = l.clock.Now()
	l.cur.Store(s)
	for c := range l.subs {
		select {
		case c <- s:
		default:
			select {
			case <-c:
			default:
			}
			c <- s
		}
	}
	l.log.Info("published key latch snapshot", "epoch", s.Epoch, "state", s.State, "key", s.Key.GUID)
}

func (l *Latcher) applyRedirect(ctx context.Context) {
	if l.redirect == nil {
		return
	}
	set := RedirectSet(l.Current())
	if l.redirectValid && slices.Equal(set, l.redirectSet) {
		return
	}
	if err := l.redirect.SetRedirect(ctx, set); err != nil {
		l.log.Warn("updating the redirect policy failed; retrying next poll", "error", err)
		l.redirectValid = false
		return
	}
	l.redirectSet, l.redirectValid = set, true
}
