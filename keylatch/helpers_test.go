package keylatch

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// fakeClock lets a test see every sleep the latcher asks for and end it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers chan fakeTimer
}

type fakeTimer struct {
	d  time.Duration
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), timers: make(chan fakeTimer, 64)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.timers <- fakeTimer{d, ch}
	return ch
}

// next waits for the latcher's next sleep and returns its length without
// ending it.
func (c *fakeClock) next(t *testing.T) fakeTimer {
	t.Helper()
	select {
	case ft := <-c.timers:
		return ft
	case <-time.After(10 * time.Second):
		t.Fatal("the latcher did not sleep")
		return fakeTimer{}
	}
}

// fire moves the clock by the timer's length and ends the sleep.
func (c *fakeClock) fire(ft fakeTimer) {
	c.advance(ft.d)
	ft.ch <- c.Now()
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recordingRedirect remembers every redirect set it was given.
type recordingRedirect struct {
	mu   sync.Mutex
	sets [][]msp.Endpoint
	fail bool
}

func (r *recordingRedirect) SetRedirect(_ context.Context, eps []msp.Endpoint) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return os.ErrPermission
	}
	r.sets = append(r.sets, eps)
	return nil
}

func (r *recordingRedirect) last() []msp.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return nil
	}
	return r.sets[len(r.sets)-1]
}

type rig struct {
	host     *msptest.Host
	store    *Store
	client   *Client
	latcher  *Latcher
	clock    *fakeClock
	redirect *recordingRedirect
	logs     *testenv.Buffer
	statuses *statusLog
}

type statusLog struct {
	mu   sync.Mutex
	msgs []Status
}

func (s *statusLog) add(st Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, st)
}

func (s *statusLog) all() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.msgs...)
}

func enforceAll() map[msp.Endpoint]*msp.AuthorizationItem {
	return map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "ws-rules"},
		msp.EndpointIMDS:       {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "imds-rules"},
	}
}

func testStoreDir(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	// t.TempDir is 0755-ish; the store needs its own 0700 folder inside.
	return filepath.Join(base, "keys")
}

func openTestStore(t *testing.T, dir string, fsys FileSystem) *Store {
	t.Helper()
	s, err := OpenStore(&StoreOptions{Dir: dir, Owner: uint32(os.Geteuid()), FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newRig builds a host, a store in a temp folder, a client and a latcher
// with a fake clock, all wired together.
func newRig(t *testing.T, hostOpts *msptest.Options, mut func(*LatcherOptions)) *rig {
	t.Helper()
	h := msptest.NewHost(hostOpts)
	t.Cleanup(h.Close)
	r := &rig{host: h, clock: newFakeClock(), redirect: &recordingRedirect{}, logs: &testenv.Buffer{}, statuses: &statusLog{}}
	r.store = openTestStore(t, testStoreDir(t), nil)
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.client = NewClient(&ClientOptions{Addr: h.WireServerAddr(), Timeout: 2 * time.Second, Logger: log})
	opts := &LatcherOptions{
		Client: r.client, Store: r.store, Clock: r.clock, Redirect: r.redirect,
		OnStatus: r.statuses.add, Logger: log,
	}
	if mut != nil {
		mut(opts)
	}
	l, err := NewLatcher(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.latcher = l
	return r
}

// run starts the latcher's loop and stops it, waiting for it to end, when
// the test ends: before the key folder is removed, since the loop writes
// there.
func (r *rig) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.latcher.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// secretHex returns the key's secret as upper- and lowercase hex, to check
// it never shows up in logs or errors.
func secretHex(t *testing.T, k msp.Key) []string {
	t.Helper()
	b, err := msp.MarshalKeyFile(k)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return []string{f.Key, strings.ToLower(f.Key)}
}

func assertNoSecret(t *testing.T, k msp.Key, texts ...string) {
	t.Helper()
	for _, s := range secretHex(t, k) {
		for _, txt := range texts {
			if strings.Contains(txt, s) {
				t.Fatalf("key material of %s leaked into %q", k.GUID, txt)
			}
		}
	}
}

func ownerForBench() uint32 { return uint32(os.Geteuid()) }
