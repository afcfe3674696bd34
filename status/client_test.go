package status

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
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

func newTestAgent(t *testing.T, l net.Listener, opts *ProvisionOptions) *testAgent {
	t.Helper()
	a := &testAgent{reg: NewRegistry(&RegistryOptions{Version: testVersion})}
	opts.Registry = a.reg
	p, err := NewProvision(opts)
	if err != nil {
		t.Fatal(err)
	}
	a.prov = p
	mux := http.NewServeMux()
	mux.Handle(msp.ProvisionPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
				a := newTestAgent(t, nil, &ProvisionOptions{})
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
				a := newTestAgent(t, nil, &ProvisionOptions{})
				_ = a.prov.SetReady(t.Context(), AllReady)
				return a.addr()
			},
			wait: 120 * time.Second, wantCode: ExitFinished, maxElapsed: 300 * time.Millisecond,
		},
		{
			name: "becomes ready after 1.5s",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, &ProvisionOptions{})
				_ = a.prov.SetReady(t.Context(), RedirectorReady|ListenerReady)
				time.AfterFunc(1500*time.Millisecond, func() { _ = a.prov.SetReady(context.Background(), KeyLatchReady) })
				return a.addr()
			},
			wait: 5 * time.Second, wantCode: ExitFinished, minElapsed: 1500 * time.Millisecond, maxElapsed: 1700 * time.Millisecond,
		},
		{
			name: "never ready",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, &ProvisionOptions{})
				_ = a.prov.SetReady(t.Context(), ListenerReady)
				return a.addr()
			},
			wait: time.Second, wantCode: ExitNotFinished, minElapsed: time.Second, maxElapsed: 1300 * time.Millisecond,
			wantReport: "Provisioning has not finished yet.\n",
		},
		{
			name: "finished with an eBPF error",
			setup: func(t *testing.T) string {
				a := newTestAgent(t, nil, &ProvisionOptions{Timeout: 200 * time.Millisecond})
				a.reg.Set(ModuleRedirector, msp.ModuleUnknown, ebpfErr)
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
					a := newTestAgent(t, l, &ProvisionOptions{})
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
		if r.URL.Path != msp.ProvisionPath || r.Method != http.MethodGet {
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
	a := newTestAgent(t, nil, &ProvisionOptions{})
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
	a := newTestAgent(t, nil, &ProvisionOptions{})
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

// rawAgent is a loopback listener that hands every connection to serve,
// for answers no well-behaved HTTP server gives. Connections and the
// listener close with the test.
func rawAgent(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); serve(c) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// readHead reads a request head up to its blank line and returns it.
func readHead(c net.Conn) string {
	br := bufio.NewReader(c)
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil || line == "\r\n" {
			return b.String()
		}
	}
}

// answer returns a serve func that reads the request and writes resp.
func answer(resp string) func(net.Conn) {
	return func(c net.Conn) {
		readHead(c)
		_, _ = io.WriteString(c, resp)
		c.Close()
	}
}

func TestWaitProvisionedRawAnswers(t *testing.T) {
	// padded is a valid answer of exactly n bytes.
	padded := func(n int) string {
		s := `{"finished":true,"errorMessage":""}`
		return s + strings.Repeat(" ", n-len(s))
	}
	ok200 := func(body string) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	isStatusErr := func(err error) bool { return errors.Is(err, ErrInvalidStatus) }
	tests := []struct {
		name         string
		serve        func(net.Conn)
		wantFinished bool
		// wantErr reports whether LastError is the expected one; nil wants
		// an answered query.
		wantErr func(error) bool
		// maxElapsed bounds the whole call; QueryTimeout is 200ms.
		maxElapsed time.Duration
	}{
		{
			name:  "garbage",
			serve: answer("garbage\r\n\r\n"),
			wantErr: func(err error) bool {
				return !errors.Is(err, ErrInvalidStatus) && strings.Contains(err.Error(), "malformed HTTP response")
			},
		},
		{
			name:  "closes at once",
			serve: func(c net.Conn) { c.Close() },
			wantErr: func(err error) bool {
				// Whether the close or the reset of the unread request
				// arrives first is up to the kernel.
				return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
			},
		},
		{
			name:       "never answers",
			serve:      func(c net.Conn) { readHead(c) },
			wantErr:    func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) },
			maxElapsed: time.Second,
		},
		{
			name:  "non-200",
			serve: answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
			wantErr: func(err error) bool {
				return isStatusErr(err) && strings.Contains(err.Error(), "503 Service Unavailable")
			},
		},
		{
			// Without the bound this would parse: the padding is JSON space.
			name:    "body over the bound",
			serve:   answer(ok200(padded(64<<10 + 1))),
			wantErr: isStatusErr,
		},
		{
			name:         "body at the bound",
			serve:        answer(ok200(padded(64 << 10))),
			wantFinished: true,
		},
		{
			name:    "truncated body",
			serve:   answer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"finished\":true}"),
			wantErr: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name:         "body read to close, no length",
			serve:        answer("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + `{"finished":true}`),
			wantFinished: true,
		},
		{
			name:         "chunked",
			serve:        answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n" + `{"finished":true}` + "\r\n0\r\n\r\n"),
			wantFinished: true,
		},
		{
			name:         "100 Continue first",
			serve:        answer("HTTP/1.1 100 Continue\r\n\r\n" + ok200(`{"finished":true}`)),
			wantFinished: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawAgent(t, tt.serve)
			start := time.Now()
			res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: addr, QueryTimeout: 200 * time.Millisecond})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if res.Queries != 1 || res.Finished != tt.wantFinished {
				t.Errorf("result %+v, want one query and finished %v", res, tt.wantFinished)
			}
			switch {
			case tt.wantErr == nil && res.LastError != nil:
				t.Errorf("LastError %v, want an answer", res.LastError)
			case tt.wantErr != nil && (res.LastError == nil || !tt.wantErr(res.LastError)):
				t.Errorf("LastError %v, not the expected one", res.LastError)
			}
			limit := tt.maxElapsed
			if limit == 0 {
				limit = 150 * time.Millisecond
			}
			if elapsed > limit {
				t.Errorf("took %v, want at most %v", elapsed, limit)
			}
		})
	}
}

// TestWaitProvisionedWire checks the bytes of the queries, sent through
// WaitOptions.Dial to an address only the dialer knows. The first answer
// is not finished and the second is, so there are exactly two.
func TestWaitProvisionedWire(t *testing.T) {
	heads := make(chan string, 10)
	var n atomic.Int64
	addr := rawAgent(t, func(c net.Conn) {
		heads <- readHead(c)
		body := `{"finished":false}`
		if n.Add(1) > 1 {
			body = `{"finished":true} `
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n"+body)
		c.Close()
	})
	var dialed []string
	dial := func(ctx context.Context, network, a string) (net.Conn, error) {
		dialed = append(dialed, network+" "+a)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	start := time.Unix(1700000000, 5)
	res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: "agent.test:3080", Dial: dial, Start: start,
		Wait: time.Since(start) + time.Minute, Interval: time.Millisecond})
	if err != nil || !res.Finished || res.Queries != 2 {
		t.Fatalf("got %+v, %v; want finished after two queries", res, err)
	}
	close(heads)
	var got []string
	for h := range heads {
		got = append(got, h)
	}
	q := "GET /provision HTTP/1.1\r\nHost: agent.test:3080\r\nMetadata: true\r\nX-Ms-Azure-Time-Tick: 1700000000000000005\r\n"
	want := []string{q + "X-Ms-Azure-Notify: true\r\nConnection: close\r\n\r\n", q + "Connection: close\r\n\r\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tcp agent.test:3080", "tcp agent.test:3080"}, dialed); diff != "" {
		t.Errorf("dialed (-want +got):\n%s", diff)
	}
}

// TestWaitProvisionedCancelDuringQuery: canceling ctx ends a query that is
// waiting for an answer, long before its QueryTimeout.
func TestWaitProvisionedCancelDuringQuery(t *testing.T) {
	addr := rawAgent(t, func(c net.Conn) { readHead(c) })
	// A cancel, not a deadline: a deadline would reach the connection
	// through the query's own.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	res, err := WaitProvisioned(ctx, &WaitOptions{Addr: addr, Wait: time.Minute, QueryTimeout: time.Minute})
	if !errors.Is(err, context.Canceled) || res.Queries != 1 || res.LastError == nil {
		t.Errorf("got %+v, %v; want one failed query and the context's error", res, err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v", el)
	}
}

func TestWaitProvisionedBadAddr(t *testing.T) {
	dial := func(context.Context, string, string) (net.Conn, error) {
		t.Error("dialed an address that would inject a header line")
		return nil, errors.New("not dialed")
	}
	res, err := WaitProvisioned(t.Context(), &WaitOptions{Addr: "127.0.0.1:3080\r\nX-Evil: 1", Dial: dial})
	if err != nil || !errors.Is(res.LastError, ErrInvalidOptions) {
		t.Errorf("got %+v, %v; want LastError wrapping ErrInvalidOptions", res, err)
	}
}

// TestQueryProvision: one query with the defaults (tick "0", no notify),
// and a non-200 answer as an AnswerError that is also ErrInvalidStatus.
func TestQueryProvision(t *testing.T) {
	heads := make(chan string, 2)
	addr := rawAgent(t, func(c net.Conn) {
		heads <- readHead(c)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n"+`{"finished":true}`)
		c.Close()
	})
	st, err := QueryProvision(t.Context(), &QueryOptions{Addr: addr})
	if err != nil || !st.Finished {
		t.Fatalf("got %+v, %v", st, err)
	}
	want := "GET /provision HTTP/1.1\r\nHost: " + addr + "\r\nMetadata: true\r\nX-Ms-Azure-Time-Tick: 0\r\nConnection: close\r\n\r\n"
	if got := <-heads; got != want {
		t.Errorf("request %q, want %q", got, want)
	}

	addr = rawAgent(t, answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
	_, err = QueryProvision(t.Context(), &QueryOptions{Addr: addr})
	var ae *AnswerError
	if !errors.As(err, &ae) || ae.Status != "404 Not Found" || !errors.Is(err, ErrInvalidStatus) {
		t.Errorf("404 answer: %v, want an AnswerError for 404 Not Found matching ErrInvalidStatus", err)
	}
}

// TestUpstreamStdout: what --status prints on stdout is upstream's, byte
// for byte, in each state; Report stays our explanation for stderr.
func TestUpstreamStdout(t *testing.T) {
	tests := []struct {
		name string
		res  WaitResult
		want string
	}{
		{"finished", WaitResult{Finished: true}, ""},
		{"not finished", WaitResult{ErrorMessage: "keyLatchStatus - x\r\n"}, ""},
		{"finished with errors, whole and with println's newline", WaitResult{Finished: true, ErrorMessage: strings.Repeat("keyLatchStatus - é\r\n", 40)},
			strings.Repeat("keyLatchStatus - é\r\n", 40) + "\n"},
	}
	for _, tt := range tests {
		if got := tt.res.Stdout(); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if got, want := QueryErrorLine(errors.New("connection refused")), "Failed to query the current provision state with error: connection refused.\n"; got != want {
		t.Errorf("QueryErrorLine = %q, want %q", got, want)
	}
}

// TestWaitReportsEachFailedQuery: upstream prints a line for every failed
// query, so OnQueryError sees each one.
func TestWaitReportsEachFailedQuery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every query fails
	var n int
	res, err := WaitProvisioned(context.Background(), &WaitOptions{Addr: addr, Wait: 300 * time.Millisecond, Interval: 50 * time.Millisecond,
		OnQueryError: func(error) { n++ }})
	if err != nil || n != res.Queries || n < 2 || res.ExitCode() != ExitNotFinished {
		t.Fatalf("%d failures reported for %d queries (%v)", n, res.Queries, err)
	}
}
