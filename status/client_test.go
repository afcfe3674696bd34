package status

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testAgent is a live in-process agent on loopback: a Provision served on
// /provision and a stand-in key latch that reacts to notify the way the
// real one does.
type testAgent struct {
	srv   *httptest.Server
	prov  *Provision
	reg   *Registry
	calls atomic.Int64
}

func newTestAgent(t *testing.T, l net.Listener, opts ProvisionOptions) *testAgent {
	t.Helper()
	a := &testAgent{reg: NewRegistry(RegistryOptions{Version: testVersion})}
	opts.Registry = a.reg
	p, err := NewProvision(opts)
	if err != nil {
		t.Fatal(err)
	}
	a.prov = p
	mux := http.NewServeMux()
	mux.Handle(ProvisionPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		p.ServeHTTP(w, r)
	}))
	a.srv = httptest.NewUnstartedServer(mux)
	if l != nil {
		a.srv.Listener.Close()
		a.srv.Listener = l
	}
	a.srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// The key latch: woken while not latched, it re-polls and, if it was
	// ready, becomes ready again, which finishes provisioning anew.
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.Notify():
				if p.Flags()&KeyLatchReady != 0 {
					p.ResetKeyLatch()
					_ = p.SetReady(ctx, KeyLatchReady)
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; a.srv.Close() })
	return a
}

func (a *testAgent) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

func TestWaitProvisioned(t *testing.T) {
	ebpfErr := "Failed to start redirector: Failed to load program 'connect4' with error: operation not permitted"
	tests := []struct {
		name string
		// setup prepares the agent and returns its address.
		setup      func(t *testing.T) string
		wait       time.Duration
		wantCode   int
		minElapsed time.Duration
		maxElapsed time.Duration
		wantReport string
	}{
		{
			name: "ready and latched at once",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, ProvisionOptions{})
				a.prov.SetLatched(true)
				_ = a.prov.SetReady(t.Context(), AllReady)
				return a.addr()
			},
			// One query and no sleep: the bound catches a poll interval
			// slept first. BenchmarkWaitProvisionedReady measures the real cost.
			wait: 120 * time.Second, wantCode: ExitFinished, maxElapsed: 90 * time.Millisecond,
		},
		{
			name: "ready with MSP disabled: notify makes it finish anew",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, ProvisionOptions{})
				_ = a.prov.SetReady(t.Context(), AllReady)
				return a.addr()
			},
			wait: 120 * time.Second, wantCode: ExitFinished, maxElapsed: 300 * time.Millisecond,
		},
		{
			name: "becomes ready after 1.5s",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, ProvisionOptions{})
				_ = a.prov.SetReady(t.Context(), RedirectorReady|ListenerReady)
				time.AfterFunc(1500*time.Millisecond, func() { _ = a.prov.SetReady(context.Background(), KeyLatchReady) })
				return a.addr()
			},
			wait: 5 * time.Second, wantCode: ExitFinished, minElapsed: 1500 * time.Millisecond, maxElapsed: 1700 * time.Millisecond,
		},
		{
			name: "never ready",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, ProvisionOptions{})
				_ = a.prov.SetReady(t.Context(), ListenerReady)
				return a.addr()
			},
			wait: time.Second, wantCode: ExitNotFinished, minElapsed: time.Second, maxElapsed: 1300 * time.Millisecond,
			wantReport: "Provisioning has not finished yet.\n",
		},
		{
			name: "finished with an eBPF error",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, ProvisionOptions{Timeout: 200 * time.Millisecond})
				a.reg.Set(ModuleRedirector, StateUnknown, ebpfErr)
				_ = a.prov.SetReady(t.Context(), KeyLatchReady|ListenerReady)
				ctx, cancel := context.WithCancel(context.Background())
				go func() { _ = a.prov.Run(ctx) }()
				t.Cleanup(cancel)
				return a.addr()
			},
			wait: 5 * time.Second, wantCode: ExitFailed, maxElapsed: 1500 * time.Millisecond,
			wantReport: "ebpfProgramStatus - " + ebpfErr + "\r\n",
		},
		{
			name: "not listening for the first second",
			setup: func(t *testing.T) string {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := l.Addr().String()
				l.Close()
				started := make(chan struct{})
				time.AfterFunc(time.Second, func() {
					defer close(started)
					l, err := net.Listen("tcp", addr)
					if err != nil {
						t.Errorf("re-listening on %s: %v", addr, err)
						return
					}
					a := newTestAgent(t, l, ProvisionOptions{})
					_ = a.prov.SetReady(context.Background(), AllReady)
				})
				t.Cleanup(func() { <-started })
				return addr
			},
			wait: 5 * time.Second, wantCode: ExitFinished, minElapsed: time.Second, maxElapsed: 1500 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.setup(t)
			start := time.Now()
			res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: addr, Wait: tt.wait, Start: start})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode() != tt.wantCode {
				t.Errorf("exit code %d, want %d (result %+v)", res.ExitCode(), tt.wantCode, res)
			}
			if elapsed < tt.minElapsed || elapsed > tt.maxElapsed {
				t.Errorf("took %v, want between %v and %v", elapsed, tt.minElapsed, tt.maxElapsed)
			}
			if diff := cmp.Diff(tt.wantReport, res.Report()); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWaitProvisionedUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: addr, Wait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode() != ExitNotFinished || res.Answered != 0 || res.Queries < 3 || res.LastError == nil {
		t.Errorf("result %+v", res)
	}
	if r := res.Report(); !strings.HasPrefix(r, "Failed to query the current provision state with error: ") || len(r) > MaxReportBytes {
		t.Errorf("report %q", r)
	}
}

func TestWaitProvisionedHungServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		// Accept and never answer; the connections close with the test.
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	start := time.Now()
	res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: l.Addr().String(), Wait: 200 * time.Millisecond, QueryTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode() != ExitNotFinished || time.Since(start) > time.Second {
		t.Errorf("result %+v after %v", res, time.Since(start))
	}
}

func TestWaitProvisionedHeaders(t *testing.T) {
	var got []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Clone())
		if r.URL.Path != ProvisionPath || r.Method != http.MethodGet {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		_, _ = w.Write([]byte(`{"finished":false,"errorMessage":""}`))
	}))
	defer srv.Close()
	start := time.Now()
	_, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: strings.TrimPrefix(srv.URL, "http://"), Wait: 250 * time.Millisecond, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 {
		t.Fatalf("%d queries, want several", len(got))
	}
	tick := start.UnixNano()
	for i, h := range got {
		if h.Get("Metadata") != "true" || h.Get("X-Ms-Azure-Time-Tick") != strconv.FormatInt(tick, 10) {
			t.Errorf("query %d headers %v", i, h)
		}
		if _, notify := h["X-Ms-Azure-Notify"]; notify != (i == 0) {
			t.Errorf("query %d: notify header present = %v, want only on the first", i, notify)
		}
	}
}

func TestWaitProvisionedBadAnswers(t *testing.T) {
	tests := []struct {
		name string
		code int
		body string
	}{
		{"400", 400, "Metadata header is required"},
		{"not json", 200, "<html>"},
		{"no finished field", 200, `{"errorMessage":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.code)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: strings.TrimPrefix(srv.URL, "http://")})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode() != ExitNotFinished || res.Answered != 0 || res.LastError == nil {
				t.Errorf("result %+v", res)
			}
		})
	}
}

func TestWaitProvisionedIdempotent(t *testing.T) {
	a := newTestAgent(t, nil, ProvisionOptions{})
	a.prov.SetLatched(true)
	_ = a.prov.SetReady(t.Context(), AllReady)
	for i := range 3 {
		res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: a.addr(), Wait: 120 * time.Second})
		if err != nil || res.ExitCode() != ExitFinished || res.Queries != 1 {
			t.Errorf("call %d: %+v, %v", i, res, err)
		}
	}
}

func TestWaitProvisionedContextCanceled(t *testing.T) {
	a := newTestAgent(t, nil, ProvisionOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	res, err := WaitProvisioned(ctx, &WaitOptions{Addr: a.addr(), Wait: time.Minute})
	if err == nil || res.ExitCode() != ExitNotFinished {
		t.Errorf("got %+v, %v; want a context error and exit 1", res, err)
	}
}

func TestWaitResultReport(t *testing.T) {
	line := func(mod string, n int) string { return mod + " - " + strings.Repeat("é", n) + "\r\n" }
	long := line("ebpfProgramStatus", 60) + line("keyLatchStatus", 100) + line("proxyListenerStatus", 200)
	tests := []struct {
		name     string
		res      WaitResult
		wantCode int
		want     string
	}{
		{"success", WaitResult{Finished: true}, 0, ""},
		{"short failure kept", WaitResult{Finished: true, ErrorMessage: "keyLatchStatus - x\r\n"}, 2, "keyLatchStatus - x\r\n"},
		{"long failure cut after whole lines", WaitResult{Finished: true, ErrorMessage: long}, 2,
			line("ebpfProgramStatus", 60) + line("keyLatchStatus", 100) + "...\n"},
		{"not finished", WaitResult{ErrorMessage: "keyLatchStatus - x\r\n"}, 1, "Provisioning has not finished yet.\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.res.Report()
			if tt.res.ExitCode() != tt.wantCode {
				t.Errorf("exit code %d, want %d", tt.res.ExitCode(), tt.wantCode)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if len(got) > MaxReportBytes {
				t.Errorf("report is %d bytes, over %d", len(got), MaxReportBytes)
			}
		})
	}
	// A single line longer than the limit is cut inside, on a rune boundary.
	got := WaitResult{Finished: true, ErrorMessage: line("ebpfProgramStatus", 500)}.Report()
	if len(got) > MaxReportBytes || !strings.HasSuffix(got, "...\n") || !strings.HasPrefix(got, "ebpfProgramStatus - é") {
		t.Errorf("report %q (%d bytes)", got, len(got))
	}
}
