package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metadatasec/gpa/agent/metrics"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// hostRequest is one request as a fakeHost read it off the wire.
type hostRequest struct {
	Msg       msp.Message
	VerifyErr error
	KeyGUID   string
}

// fakeHost is a loopback HTTP/1.1 server that parses requests byte for byte,
// so tests see exactly the header set the proxy put on the wire, and checks
// their signatures with msp.Verify.
type fakeHost struct {
	ln      net.Listener
	keys    sync.Map // guid -> msp.Key
	respond func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool
	// noVerify skips signature checks and request recording (benchmarks).
	noVerify bool

	mu    sync.Mutex
	reqs  []*hostRequest
	conns atomic.Int64
	wg    sync.WaitGroup
}

func newFakeHost(t testing.TB) *fakeHost {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHost{ln: ln}
	h.wg.Add(1)
	go h.accept()
	t.Cleanup(h.Close)
	return h
}

func (h *fakeHost) Close() {
	h.ln.Close()
	h.wg.Wait()
}

func (h *fakeHost) addKey(k msp.Key) { h.keys.Store(k.GUID, k) }

func (h *fakeHost) requests() []*hostRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*hostRequest(nil), h.reqs...)
}

func (h *fakeHost) accept() {
	defer h.wg.Done()
	var cw sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	defer func() {
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		cw.Wait()
	}()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.conns.Add(1)
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		cw.Add(1)
		go func() {
			defer cw.Done()
			defer func() { mu.Lock(); delete(open, c); mu.Unlock(); c.Close() }()
			h.serve(c)
		}()
	}
}

func (h *fakeHost) serve(c net.Conn) {
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	for {
		hr, err := readWireRequest(br)
		if err != nil {
			return
		}
		if h.noVerify {
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
			if bw.Flush() != nil {
				return
			}
			continue
		}
		if _, ok := hr.Msg.Get(msp.HeaderAuthorization); ok {
			k, err := msp.Verify(&hr.Msg, func(g string) (msp.Key, bool) {
				v, ok := h.keys.Load(g)
				if !ok {
					return msp.Key{}, false
				}
				return v.(msp.Key), true
			})
			hr.VerifyErr, hr.KeyGUID = err, k.GUID
		} else {
			hr.VerifyErr = errors.New("unsigned")
		}
		h.mu.Lock()
		h.reqs = append(h.reqs, hr)
		h.mu.Unlock()
		if h.respond != nil {
			if !h.respond(c, bw, hr) {
				return
			}
			continue
		}
		body := "host saw " + hr.Msg.Method + " " + hr.Msg.RawURI
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Ms-Azure-Host-Authorization: from-host\r\n\r\n%s", len(body), body)
		if bw.Flush() != nil {
			return
		}
	}
}

// readWireRequest parses a request keeping every header line as sent.
func readWireRequest(br *bufio.Reader) (*hostRequest, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	parts := strings.SplitN(strings.TrimRight(line, "\r\n"), " ", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("bad request line %q", line)
	}
	hr := &hostRequest{Msg: msp.Message{Method: parts[0], RawURI: parts[1]}}
	cl, chunked := -1, false
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		name, value, _ := strings.Cut(l, ":")
		value = strings.TrimSpace(value)
		hr.Msg.Header = append(hr.Msg.Header, msp.HeaderField{Name: name, Value: value})
		switch strings.ToLower(name) {
		case "content-length":
			cl, _ = strconv.Atoi(value)
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	switch {
	case chunked:
		b, err := io.ReadAll(httputil.NewChunkedReader(br))
		if err != nil {
			return nil, err
		}
		if _, err := br.ReadString('\n'); err != nil { // end of trailers
			return nil, err
		}
		hr.Msg.Body = b
	case cl > 0:
		hr.Msg.Body = make([]byte, cl)
		if _, err := io.ReadFull(br, hr.Msg.Body); err != nil {
			return nil, err
		}
	}
	return hr, nil
}

// testKey returns a key with a distinct secret per n.
func testKey(t testing.TB, n int) msp.Key {
	t.Helper()
	k, err := msp.NewKey(fmt.Sprintf("00000000-0000-0000-0000-%012d", n), fmt.Sprintf("%064x", n+0x1234567))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// snapshotFor builds a snapshot with the given rule sets and key.
func snapshotFor(t testing.TB, epoch uint64, items map[msp.Endpoint]*msp.AuthorizationItem, key *msp.Key) *keylatch.Snapshot {
	t.Helper()
	p, err := msp.NewPolicy(items, &msp.EvaluatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &keylatch.Snapshot{Epoch: epoch, State: "WireServer Enforce -  IMDS Enforce - HostGA Enforce", Policy: p}
	if key != nil {
		s.Key = *key
		if s.Signer, err = msp.NewSigner(*key); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// memLog collects audit lines.
type memLog struct {
	mu    sync.Mutex
	lines [][]byte
}

func (m *memLog) Write(p []byte) (int, error) {
	m.mu.Lock()
	m.lines = append(m.lines, append([]byte(nil), p...))
	m.mu.Unlock()
	return len(p), nil
}

func (m *memLog) records(t testing.TB) []msp.AuditRecord {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []msp.AuditRecord
	for _, l := range m.lines {
		var r msp.AuditRecord
		if err := jsonUnmarshal(l, &r); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// testProxy is a running Server wired to fake hosts.
type testProxy struct {
	srv  *Server
	addr string
	log  *memLog
	// metrics serves the proxy's series in the Prometheus text format.
	metrics http.Handler
	snap    atomic.Pointer[keylatch.Snapshot]
	hostsMu sync.Mutex
	hosts   map[netip.AddrPort]string
	done    chan error
}

type proxyOpts struct {
	caller   *Caller
	resolver CallerResolver
	tweak    func(*Config)
	// wrap, when set, wraps the proxy's listener.
	wrap func(net.Listener) net.Listener
}

// rootCaller and userCaller are the two identities of most tests.
func rootCaller(dst netip.AddrPort) *Caller {
	return &Caller{OriginalDst: dst, Claims: msp.Claims{UserID: 0, UserName: "root", UserGroups: []string{"root"},
		ProcessID: 42, ProcessName: "curl", ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl http://x", RunAsElevated: true}}
}

func userCaller(dst netip.AddrPort) *Caller {
	return &Caller{OriginalDst: dst, Claims: msp.Claims{UserID: 1000, UserName: "alice", UserGroups: []string{"alice", "users"},
		ProcessID: 43, ProcessName: "python3", ProcessFullPath: "/usr/bin/python3", ProcessCmdLine: "python3 app.py"}}
}

func newTestProxy(t testing.TB, host *fakeHost, o proxyOpts) *testProxy {
	t.Helper()
	tp := &testProxy{log: &memLog{}, hosts: map[netip.AddrPort]string{}, done: make(chan error, 1)}
	if host != nil {
		for _, ep := range msp.Endpoints {
			tp.hosts[ep.AddrPort()] = host.ln.Addr().String()
		}
	}
	res := o.resolver
	if res == nil {
		res = &StaticResolver{Caller: o.caller}
	}
	reg := prometheus.NewRegistry()
	pm, err := metrics.NewProxy(reg)
	if err != nil {
		t.Fatal(err)
	}
	tp.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	cfg := Config{
		Resolver: res,
		Latch:    SnapshotFunc(tp.snap.Load),
		Metrics:  pm,
		// Never dial a metadata address: map each to its loopback fake.
		Dial: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			tp.hostsMu.Lock()
			a, ok := tp.hosts[dst]
			tp.hostsMu.Unlock()
			if !ok {
				return nil, fmt.Errorf("test dialer: no fake host for %s", dst)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", a)
		},
		Now:      func() time.Time { return time.Date(2025, 4, 23, 12, 0, 0, 0, time.UTC) },
		AuditLog: tp.log,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if o.tweak != nil {
		o.tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp.srv, tp.addr = srv, ln.Addr().String()
	if o.wrap != nil {
		ln = o.wrap(ln)
	}
	go func() { tp.done <- srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-tp.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return tp
}

// client returns an HTTP client whose every connection goes to the proxy,
// as the kernel redirect would make it; URLs can name the metadata
// addresses without any packet going there.
func (tp *testProxy) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", tp.addr)
		},
		DisableCompression: true,
	}, Timeout: 10 * time.Second}
}

// raw sends raw bytes on a new connection and returns everything the proxy
// answers until it closes the connection or two seconds pass.
func (tp *testProxy) raw(t testing.TB, req string) string {
	t.Helper()
	resp, err := rawExchange(tp.addr, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// rawExchange is raw without a test to fail, so goroutines may call it: an
// error means the request could not be sent.
func rawExchange(addr, req string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b), nil
}

func rawStatus(resp string) int {
	if len(resp) < 12 {
		return 0
	}
	n, _ := strconv.Atoi(resp[9:12])
	return n
}

// waitRecords waits for n audit records: a record is written once the
// response is complete, which can be just after the client read it.
func (tp *testProxy) waitRecords(t testing.TB, n int) []msp.AuditRecord {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		recs := tp.log.records(t)
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (tp *testProxy) setHost(dst netip.AddrPort, addr string) {
	tp.hostsMu.Lock()
	tp.hosts[dst] = addr
	tp.hostsMu.Unlock()
}
