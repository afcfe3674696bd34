package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/msp"
)

// TestKeyRotationInFlight rotates the key while requests are in flight:
// every request verifies with the key of the epoch it was decided under, and
// requests after the last rotation use the last key.
func TestKeyRotationInFlight(t *testing.T) {
	host := newFakeHost(t)
	const epochs = 40
	keys := make([]msp.Key, epochs+1)
	for i := 1; i <= epochs; i++ {
		keys[i] = testKey(t, 100+i)
		host.addKey(keys[i])
	}
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, &keys[1]))

	stop := make(chan struct{})
	var rot sync.WaitGroup
	rot.Add(1)
	go func() {
		defer rot.Done()
		for e := 2; e <= epochs; e++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			tp.snap.Store(snapshotFor(t, uint64(e), nil, &keys[e]))
		}
	}()
	var clients sync.WaitGroup
	var sent atomic.Int64
	for w := range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			cl := tp.client()
			for i := 0; i < 60; i++ {
				resp, err := cl.Get(fmt.Sprintf("http://169.254.169.254/metadata/instance?w=%d&i=%d", w, i))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
			}
		}()
	}
	clients.Wait()
	close(stop)
	rot.Wait()
	last := tp.snap.Load()

	guidByURI := map[string]string{}
	for _, hr := range host.requests() {
		if hr.VerifyErr != nil {
			t.Errorf("%s: %v", hr.Msg.RawURI, hr.VerifyErr)
		}
		guidByURI[hr.Msg.RawURI] = hr.KeyGUID
	}
	recs := tp.waitRecords(t, int(sent.Load()))
	epochsSeen := map[uint64]bool{}
	for _, r := range recs {
		epochsSeen[r.Epoch] = true
		if want := keys[r.Epoch].GUID; guidByURI[r.URL] != want {
			t.Errorf("%s decided under epoch %d was signed with %q, want %q", r.URL, r.Epoch, guidByURI[r.URL], want)
		}
	}
	if len(epochsSeen) < 3 {
		t.Errorf("only %d epochs saw requests; the test did not exercise rotation", len(epochsSeen))
	}
	// After the last epoch, the last key.
	before := len(host.requests())
	resp, err := tp.client().Get("http://169.254.169.254/metadata/instance?after")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hr := host.requests()[before]; hr.KeyGUID != last.Key.GUID || hr.VerifyErr != nil {
		t.Errorf("after rotation signed with %q (%v), want %q", hr.KeyGUID, hr.VerifyErr, last.Key.GUID)
	}
}

// waitGoroutines waits until the goroutine count is back to at most base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpstreamFaults: host down gives 502, a host slower than the response
// timeout 504, a host that closes mid-response truncates the client's
// response; the proxy keeps serving and its goroutines return to baseline.
func TestUpstreamFaults(t *testing.T) {
	host := newFakeHost(t)
	var mode atomic.Value
	mode.Store("ok")
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		switch mode.Load().(string) {
		case "slow":
			time.Sleep(400 * time.Millisecond)
			return false
		case "cut":
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			w.Flush()
			return false
		case "cut-chunked":
			io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
			w.Flush()
			return false
		case "close-before-response":
			return false
		case "garbage":
			io.WriteString(w, "NOT HTTP\r\n\r\n")
			w.Flush()
			return false
		}
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return w.Flush() == nil
	}
	// A port nothing listens on: bind, note, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()

	base := runtime.NumGoroutine()
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr), tweak: func(c *Config) {
		c.ResponseTimeout = 150 * time.Millisecond
		c.DialTimeout = 200 * time.Millisecond
	}})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	get := func() (int, string, error) {
		resp, err := tp.client().Get("http://169.254.169.254/metadata/instance")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for _, tc := range []struct {
		mode    string
		want    int
		bodyErr bool
	}{
		{"ok", 200, false},
		{"slow", 504, false},
		{"cut", 200, true},
		{"cut-chunked", 200, true},
		{"close-before-response", 502, false},
		{"garbage", 503, false},
		{"ok", 200, false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			mode.Store(tc.mode)
			st, body, err := get()
			if st != tc.want {
				t.Fatalf("status %d (%v), want %d", st, err, tc.want)
			}
			if tc.bodyErr != (err != nil) {
				t.Errorf("body %q, err %v; want error %v", body, err, tc.bodyErr)
			}
			if tc.bodyErr && !errors.Is(err, io.ErrUnexpectedEOF) {
				// A connection left open with a short body makes the client
				// wait for bytes that never come, until its own timeout.
				t.Errorf("body error %v, want the connection cut (unexpected EOF)", err)
			}
		})
	}
	t.Run("host-down", func(t *testing.T) {
		// Idle upstream connections to a host that went away are dropped
		// with the host; a new dial fails.
		tp.srv.pool.closeIdle(false)
		tp.setHost(msp.IMDSAddr, deadAddr)
		defer tp.setHost(msp.IMDSAddr, host.ln.Addr().String())
		if st, _, err := get(); st != 502 {
			t.Errorf("status %d (%v), want 502", st, err)
		}
	})
	mode.Store("ok")
	if st, _, err := get(); st != 200 {
		t.Fatalf("proxy unusable after faults: %d %v", st, err)
	}
	recs := tp.waitRecords(t, 9)
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, r.ResponseStatus)
	}
	if got := strings.Join(kinds, ","); !strings.Contains(got, "504 Gateway Timeout") || !strings.Contains(got, "502 Bad Gateway") {
		t.Errorf("audit statuses %s", got)
	}
	tp.srv.Shutdown(context.Background())
	<-tp.done
	tp.done <- ErrServerClosed // for the cleanup
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	waitGoroutines(t, base)
	if n := tp.srv.idleWorkers.Load(); n != 0 {
		t.Errorf("%d connection goroutines still counted as waiting after Serve returned", n)
	}
}

// TestConnectionLimitSlowlorisAndPanic: connections over MaxConns get 503;
// a client that never finishes its head is cut off after ReadHeaderTimeout;
// a panic in one connection does not take the server down.
func TestConnectionLimitSlowlorisAndPanic(t *testing.T) {
	host := newFakeHost(t)
	var panicNext atomic.Bool
	res := &StaticResolver{ByClientPort: func(port uint16) *Caller {
		if panicNext.CompareAndSwap(true, false) {
			panic("resolver bug")
		}
		return rootCaller(msp.IMDSAddr)
	}}
	tp := newTestProxy(t, host, proxyOpts{resolver: res, tweak: func(c *Config) {
		c.MaxConns = 3
		c.ReadHeaderTimeout = 200 * time.Millisecond
		// Refused at once: with the default wait the held connections
		// below would reach their header timeout and free a slot first.
		c.MaxConnsWait = -1
	}})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))

	// Slowloris: a head that never ends.
	slow, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	io.WriteString(slow, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\n")
	for range 5 {
		if _, err := io.WriteString(slow, "X-A: b\r\n"); err != nil {
			break
		}
		time.Sleep(60 * time.Millisecond)
	}
	slow.SetReadDeadline(time.Now().Add(3 * time.Second))
	// Closed by the proxy: EOF, or a reset because its request was unread.
	if _, err := io.ReadAll(slow); err != nil && isTimeout(err) {
		t.Errorf("slowloris connection still open: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("slowloris connection lived %v", el)
	}

	// Fill the connection slots with idle keep-alive connections.
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(50 * time.Millisecond)
	if resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\n\r\n"); rawStatus(resp) != 503 {
		t.Errorf("over the limit: %q", resp)
	}
	for _, c := range held {
		c.Close()
	}
	time.Sleep(50 * time.Millisecond)

	// A panic while serving one connection.
	panicNext.Store(true)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	c.Close()
	if len(b) != 0 {
		t.Errorf("panicking connection answered %q", b)
	}
	if resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); rawStatus(resp) != 200 {
		t.Errorf("after a panic: %q", resp)
	}
	if !strings.Contains(scrape(t, tp), "gpa_proxy_connection_panics_total 1") {
		t.Errorf("panic not counted")
	}
}

// TestConnectionLimitWait: a burst of connections over MaxConns is served,
// not refused, also when it lasts longer than one MaxConnsWait (each slot
// taken restarts the window); with every slot held, the first connection
// over the limit waits MaxConnsWait before its 503 and the next is refused
// at once; once a slot is free again, a connection gets it.
func TestConnectionLimitWait(t *testing.T) {
	host := newFakeHost(t)
	const wait = 400 * time.Millisecond
	// 30 ms per connection, one at a time: the burst below lasts about
	// 600 ms, longer than the window.
	res := &StaticResolver{ByClientPort: func(uint16) *Caller {
		time.Sleep(30 * time.Millisecond)
		return rootCaller(msp.IMDSAddr)
	}}
	tp := newTestProxy(t, host, proxyOpts{resolver: res, tweak: func(c *Config) {
		c.MaxConns = 1
		c.MaxConnsWait = wait
	}})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	get := "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

	const burst = 20
	statuses := make(chan int, burst)
	var wg sync.WaitGroup
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- rawStatusOf(tp.addr, get)
		}()
	}
	wg.Wait()
	close(statuses)
	got := map[int]int{}
	for st := range statuses {
		got[st]++
	}
	if diff := cmp.Diff(map[int]int{200: burst}, got); diff != "" {
		t.Errorf("burst of %d over MaxConns 1, statuses (-want +got):\n%s", burst, diff)
	}

	// Hold the slot with a connection that sends nothing.
	held, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	first := rawStatusOf(tp.addr, get)
	firstTook := time.Since(start)
	start = time.Now()
	second := rawStatusOf(tp.addr, get)
	secondTook := time.Since(start)
	if first != 503 || firstTook < wait {
		t.Errorf("first connection over the limit: %d after %v, want 503 after at least %v", first, firstTook, wait)
	}
	if second != 503 || secondTook >= wait/2 {
		t.Errorf("second connection over the limit: %d after %v, want 503 at once", second, secondTook)
	}
	// The slot is free once the proxy has read the close.
	held.Close()
	st := 0
	for deadline := time.Now().Add(2 * time.Second); st != 200 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st = rawStatusOf(tp.addr, get)
	}
	if st != 200 {
		t.Errorf("after a slot was freed: %d, want 200", st)
	}
}

// TestConnectionLimitWaitEndsOnShutdown: Shutdown ends a wait for a slot at
// once, and the waiting connection is closed, not answered 503, while the
// requests that hold the slots are still in flight.
func TestConnectionLimitWaitEndsOnShutdown(t *testing.T) {
	host := newFakeHost(t)
	release := make(chan struct{})
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		<-release
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return w.Flush() == nil
	}
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr), tweak: func(c *Config) {
		c.MaxConns = 2
		c.MaxConnsWait = time.Minute
	}})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	get := "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); rawStatusOf(tp.addr, get) }()
	}
	for deadline := time.Now().Add(3 * time.Second); len(host.requests()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two slow requests never reached the host")
		}
	}
	waiting := make(chan int, 1)
	go func() { waiting <- rawStatusOf(tp.addr, get) }()
	time.Sleep(100 * time.Millisecond) // accepted, waiting for a slot
	ctx, cancel := context.WithCancel(context.Background())
	go tp.srv.Shutdown(ctx)
	defer cancel()
	select {
	case err := <-tp.done:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		tp.done <- ErrServerClosed // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still waiting for a slot 5 s after Shutdown")
	}
	select {
	case st := <-waiting:
		if st != 0 {
			t.Errorf("the waiting connection got %d, want it closed unanswered", st)
		}
	case <-time.After(5 * time.Second):
		t.Error("the waiting connection was not closed")
	}
}

// TestGracefulShutdown: a request in flight completes; idle connections
// are closed; new connections are refused.
func TestGracefulShutdown(t *testing.T) {
	host := newFakeHost(t)
	release := make(chan struct{})
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		if strings.Contains(hr.Msg.RawURI, "slow") {
			<-release
		}
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return w.Flush() == nil
	}
	srvDone := make(chan error, 1)
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	idle, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	type result struct {
		st  int
		err error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := tp.client().Get("http://169.254.169.254/slow")
		if err != nil {
			inflight <- result{0, err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		inflight <- result{resp.StatusCode, nil}
	}()
	// Wait until the host has the slow request.
	for deadline := time.Now().Add(3 * time.Second); len(host.requests()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("slow request never reached the host")
		}
		time.Sleep(5 * time.Millisecond)
	}
	go func() { srvDone <- tp.srv.Shutdown(context.Background()) }()
	// The idle connection is closed promptly.
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("idle connection not closed: %d %v", n, err)
	}
	select {
	case err := <-srvDone:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if r := <-inflight; r.st != 200 {
		t.Errorf("in-flight request: %d %v", r.st, r.err)
	}
	if err := <-srvDone; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", tp.addr, time.Second); err == nil {
		t.Errorf("listener still accepts after Shutdown")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestPoolReuse: a client opening a new connection per request reuses the
// proxy's upstream connections, and a host closing an idle upstream
// connection costs no failed request.
func TestPoolReuse(t *testing.T) {
	host := newFakeHost(t)
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	for i := range 20 {
		if resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); rawStatus(resp) != 200 {
			t.Fatalf("request %d: %q", i, resp)
		}
	}
	if n := host.conns.Load(); n != 1 {
		t.Errorf("20 sequential requests opened %d upstream connections, want 1", n)
	}
	// The host drops its side of every idle connection.
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		w.Flush()
		return false
	}
	for i := range 5 {
		if resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); rawStatus(resp) != 200 {
			t.Fatalf("request %d after host closes: %q", i, resp)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPoolStreamedRequestChecksIdleConn: a request whose body is streamed
// cannot be sent twice, so a pooled connection the host closed is found
// closed before it is used, however briefly it was idle.
func TestPoolStreamedRequestChecksIdleConn(t *testing.T) {
	host := newFakeHost(t)
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		w.Flush()
		return false // close without saying so
	}
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.WireServerAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	body := strings.Repeat("L", 1000)
	for i := range 4 {
		resp := tp.raw(t, fmt.Sprintf("PUT /vmAgentLog HTTP/1.1\r\nHost: 168.63.129.16\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
		if rawStatus(resp) != 200 {
			t.Fatalf("streamed request %d after the host closed the pooled connection: %q", i, resp)
		}
		time.Sleep(10 * time.Millisecond) // the host's FIN arrives
	}
	if n := host.conns.Load(); n != 4 {
		t.Errorf("4 requests on connections the host closed opened %d upstream connections, want 4", n)
	}
}

// TestResponseHopByHop: the host's hop-by-hop headers, and those its
// Connection header names, do not reach the client; the marker replaces any
// host value of x-ms-azure-host-authorization.
func TestResponseHopByHop(t *testing.T) {
	host := newFakeHost(t)
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\nUpgrade: h2c\r\n"+
			"X-Keep: yes\r\nx-ms-azure-host-authorization: host\r\nContent-Length: 2\r\n\r\nok")
		return w.Flush() == nil
	}
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	for _, bad := range []string{"X-Hop", "Keep-Alive", "Upgrade", "host\r\n"} {
		if strings.Contains(resp, bad) {
			t.Errorf("response carries %q\n%s", bad, resp)
		}
	}
	if !strings.Contains(resp, "X-Keep: yes") || strings.Count(strings.ToLower(resp), "x-ms-azure-host-authorization") != 1 {
		t.Errorf("response\n%s", resp)
	}
}

// rawStatusOf is the status of rawExchange's answer, 0 when there is none.
func rawStatusOf(addr, req string) int {
	resp, _ := rawExchange(addr, req)
	return rawStatus(resp)
}

// TestWorkerReuseAfterFailedWrite: a connection goroutine serves the next
// connection once its own ended, with its buffers reset. A client that
// resets its connection before the answer leaves the writer with a sticky
// error; the next connection, served by the same goroutine, must still get
// its answer.
func TestWorkerReuseAfterFailedWrite(t *testing.T) {
	host := newFakeHost(t)
	got, release := make(chan struct{}), make(chan struct{})
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		if hr.Msg.RawURI == "/metadata/held" {
			got <- struct{}{}
			<-release
		}
		body := "host saw " + hr.Msg.RawURI
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return w.Flush() == nil
	}
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))

	// One goroutine serves every connection: each is dialled only once
	// the goroutine that served the one before waits again, so the
	// connection after a reset one is served by the goroutine whose
	// writer failed.
	waitOneIdle := func(round int, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for tp.srv.idleWorkers.Load() != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d connection goroutines waiting %s, want 1", round, tp.srv.idleWorkers.Load(), what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 3 {
		if i > 0 {
			waitOneIdle(i, "before the reset connection")
		}
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /metadata/held HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n")
		<-got
		c.(*net.TCPConn).SetLinger(0) // close with a reset
		c.Close()
		release <- struct{}{}
		waitOneIdle(i, "after the reset connection ended")
		resp := tp.raw(t, fmt.Sprintf("GET /metadata/next%d HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n", i))
		if want := fmt.Sprintf("host saw /metadata/next%d", i); rawStatus(resp) != 200 || !strings.HasSuffix(resp, want) {
			t.Fatalf("round %d: the next connection got %q, want 200 ending in %q", i, resp, want)
		}
	}
}
