package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReadRelayRequest(t *testing.T) {
	manyLines := "GET / HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", relayMaxHead/8) + "\r\n"
	for _, tc := range []struct {
		name      string
		in        string
		wantHead  string
		wantClose bool
		wantErr   error
	}{
		{name: "get", in: "GET /a HTTP/1.1\r\nHost: h\r\nMetadata: true\r\n\r\n",
			wantHead: "GET /a HTTP/1.1\r\nHost: h\r\nMetadata: true\r\n\r\n"},
		{name: "connection header dropped", in: "GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
			wantHead: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "close after", in: "GET / HTTP/1.1\r\nHost: h\r\nconnection: Close\r\n\r\n",
			wantHead: "GET / HTTP/1.1\r\nHost: h\r\n\r\n", wantClose: true},
		{name: "HTTP/1.0 closes", in: "GET / HTTP/1.0\r\n\r\n", wantHead: "GET / HTTP/1.0\r\n\r\n", wantClose: true},
		{name: "bare LF", in: "GET / HTTP/1.1\nHost: h\n\n", wantHead: "GET / HTTP/1.1\nHost: h\n\n"},
		{name: "empty body allowed", in: "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
			wantHead: "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"},
		{name: "HEAD refused", in: "HEAD / HTTP/1.1\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "POST refused", in: "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "body refused", in: "GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", wantErr: errRelayUnsupported},
		{name: "chunked refused", in: "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "no colon", in: "GET / HTTP/1.1\r\nHost h\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "cut short", in: "GET / HTTP/1.1\r\nHost: h\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "one long line", in: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", relayMaxHead) + "\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "many lines", in: manyLines, wantErr: errRelayUnsupported},
		{name: "nothing", in: "", wantErr: io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head, closeAfter, err := readRelayRequest(bufio.NewReaderSize(strings.NewReader(tc.in), relayMaxHead), nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantHead, string(head)); diff != "" {
				t.Errorf("head (-want +got):\n%s", diff)
			}
			if closeAfter != tc.wantClose {
				t.Errorf("closeAfter %v, want %v", closeAfter, tc.wantClose)
			}
		})
	}
}

func TestReadRelayResponse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		want      string
		wantReuse bool
		wantErr   error
	}{
		{name: "body", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNEXT", want: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", wantReuse: true},
		{name: "empty body", in: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", want: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", wantReuse: true},
		{name: "keep-alive dropped", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na",
			want: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", wantReuse: true},
		{name: "close", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
			want: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"},
		{name: "HTTP/1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", want: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na"},
		{name: "204", in: "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "304", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "100", in: "HTTP/1.1 100 Continue\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "bad status line", in: "HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "no colon", in: "HTTP/1.1 200 OK\r\nContent-Length 1\r\n\r\na", wantErr: errRelayUnsupported},
		{name: "no length", in: "HTTP/1.1 200 OK\r\n\r\nabc", wantErr: errRelayUnsupported},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "two lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", wantErr: errRelayUnsupported},
		{name: "negative length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantErr: errRelayUnsupported},
		{name: "body cut short", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", wantErr: io.ErrUnexpectedEOF},
		{name: "head cut short", in: "HTTP/1.1 200 OK\r\nContent-Le", wantErr: io.ErrUnexpectedEOF},
		{name: "nothing", in: "", wantErr: io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reuse, err := readRelayResponse(bufio.NewReaderSize(strings.NewReader(tc.in), relayMaxHead), nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if reuse != tc.wantReuse {
				t.Errorf("reuse %v, want %v", reuse, tc.wantReuse)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

// startTestRelay serves a relay to upstream on loopback until the test ends.
func startTestRelay(t *testing.T, upstream string) (*relay, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{upstream: upstream}
	done := make(chan error, 1)
	go func() { done <- r.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		r.closeIdle()
	})
	return r, ln.Addr().String()
}

// TestRelayKeepAlive sends requests through the relay on two client
// connections one after the other: each answer arrives whole, the host
// never sees the client's Connection header, and one upstream connection
// serves them all.
func TestRelayKeepAlive(t *testing.T) {
	var conns, requests atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Connection") != "" || r.Close {
			t.Errorf("upstream saw Connection %q", r.Header.Get("Connection"))
		}
		io.WriteString(w, "answer to "+r.URL.Path)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	_, addr := startTestRelay(t, up.Listener.Addr().String())

	for i, last := range []string{"keep-alive", "close"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for _, path := range []string{"/a", "/b"} {
			hdr := "Connection: keep-alive\r\n"
			if path == "/b" {
				hdr = "Connection: " + last + "\r\n"
			}
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n"+hdr+"\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("conn %d %s: %v", i, path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != "answer to "+path {
				t.Errorf("conn %d %s: body %q, %v", i, path, body, err)
			}
		}
		if last == "close" {
			// The relay closes after the answer it was asked to close on.
			if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("after Connection: close: read %d, %v; want EOF", n, err)
			}
		}
		c.Close()
	}
	if got := requests.Load(); got != 4 {
		t.Errorf("upstream served %d requests, want 4", got)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("%d upstream connections, want one reused", got)
	}
}

// hostAnswering serves a host on loopback that answers each request on a
// connection with answer(connection number, request number), closing the
// connection after it when close is set; conns counts its connections.
func hostAnswering(t *testing.T, conns *atomic.Int32, answer func(conn, req int) (resp string, close bool)) string {
	return serveLoopback(t, func(c net.Conn, n int) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			if _, _, err := readRelayRequest(br, nil); err != nil {
				return
			}
			resp, close := answer(n, i)
			if _, err := io.WriteString(c, resp); err != nil || close {
				return
			}
		}
	})
}

// stuckHost serves a host on loopback that reads a request, reports it on
// arrived and never answers.
func stuckHost(t *testing.T) (addr string, arrived <-chan struct{}) {
	ch := make(chan struct{}, 1)
	addr = serveLoopback(t, func(c net.Conn, _ int) {
		if _, _, err := readRelayRequest(bufio.NewReader(c), nil); err != nil {
			return
		}
		ch <- struct{}{}
		io.Copy(io.Discard, c) // until the relay closes
	})
	return addr, ch
}

// relayGet sends a GET on c and reads the answer's body.
func relayGet(c net.Conn, br *bufio.Reader) (body string, closing bool, err error) {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.Close, err
}

// dialRelay opens a client connection to addr, closed when the test ends.
func dialRelay(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// dialGet opens a connection to addr for one GET.
func dialGet(addr string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	body, _, err := relayGet(c, bufio.NewReader(c))
	return body, err
}

// expectEOF requires c to be closed by the other end within 2 s.
func expectEOF(t *testing.T, name string, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("%s: read %d, %v; want EOF", name, n, err)
	}
}

// awaitServe requires serve to have returned within 2 s, and returns its
// error.
func awaitServe(t *testing.T, done <-chan error, after string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Second):
		t.Fatalf("serve did not return within 2 s of %s", after)
		return nil
	}
}

// awaitArrival requires a request at the host within 5 s.
func awaitArrival(t *testing.T, arrived <-chan struct{}) {
	t.Helper()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the host")
	}
}

// TestRelayUpstreamFails: an answer cut short closes the client's
// connection, and the broken upstream connection is not reused.
func TestRelayUpstreamFails(t *testing.T) {
	var conns atomic.Int32
	upstream := hostAnswering(t, &conns, func(conn, _ int) (string, bool) {
		if conn == 0 {
			return "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	r, addr := startTestRelay(t, upstream)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("cut answer: client got %q, %v; want the connection closed with nothing", b, err)
	}
	r.mu.Lock()
	idle := len(r.idle)
	r.mu.Unlock()
	if idle != 0 {
		t.Errorf("%d idle upstream connections after a cut answer, want 0", idle)
	}
	// The next client gets its answer over a fresh upstream connection.
	if body, err := dialGet(addr); err != nil || body != "ok" || conns.Load() != 2 {
		t.Errorf("second request: body %q, %v over %d upstream connections, want \"ok\" over 2", body, err, conns.Load())
	}
}

// TestRelayUpstreamCloses: a host answer that closes its connection is
// relayed without that Connection header, and the next request on the same
// client connection goes over a new upstream connection.
func TestRelayUpstreamCloses(t *testing.T) {
	var conns atomic.Int32
	upstream := hostAnswering(t, &conns, func(conn, _ int) (string, bool) {
		if conn == 0 {
			return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst", true
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", false
	})
	_, addr := startTestRelay(t, upstream)
	c, br := dialRelay(t, addr)
	for _, want := range []string{"first", "next"} {
		body, closing, err := relayGet(c, br)
		if err != nil || body != want || closing {
			t.Errorf("got %q (close %v), %v; want %q on a connection kept open", body, closing, err, want)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

// TestRelayStops: cancelling the relay's context ends serve promptly with
// a client idle between requests and another waiting on a host that never
// answers, and closes both clients.
func TestRelayStops(t *testing.T) {
	upstream, arrived := stuckHost(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &relay{upstream: upstream}
	done := make(chan error, 1)
	go func() { done <- r.serve(ctx, ln) }()

	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	waiting, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	io.WriteString(waiting, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	awaitArrival(t, arrived)

	cancel()
	if err := awaitServe(t, done, "cancel"); err != nil {
		t.Errorf("serve: %v", err)
	}
	expectEOF(t, "idle client", idle)
	expectEOF(t, "waiting client", waiting)
}

// TestRelayStopsOnListenerError: a listener that fails also ends the
// connections it accepted, instead of waiting for their clients or the
// host.
func TestRelayStopsOnListenerError(t *testing.T) {
	upstream, arrived := stuckHost(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{upstream: upstream}
	done := make(chan error, 1)
	go func() { done <- r.serve(context.Background(), ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	awaitArrival(t, arrived)

	ln.Close()
	if err := awaitServe(t, done, "its listener failing"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("serve: %v, want the listener's error", err)
	}
	expectEOF(t, "client", c)
}

// TestRelayPool: concurrent requests each get an upstream connection of
// their own, all of them return to the pool afterwards, closeIdle closes
// them, and a connection idle for longer than the limit is not reused.
func TestRelayPool(t *testing.T) {
	const clients = 4
	var conns atomic.Int32
	var inFlight sync.WaitGroup
	inFlight.Add(clients)
	release := make(chan struct{})
	closed := make(chan struct{}, clients+2)
	upstream := serveLoopback(t, func(c net.Conn, _ int) {
		conns.Add(1)
		defer func() { closed <- struct{}{} }()
		br := bufio.NewReader(c)
		for {
			if _, _, err := readRelayRequest(br, nil); err != nil {
				return
			}
			inFlight.Done()
			<-release
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	r, addr := startTestRelay(t, upstream)
	r.mu.Lock()
	r.idleLimit = time.Hour
	r.mu.Unlock()

	get := func() error {
		if body, err := dialGet(addr); err != nil || body != "ok" {
			return fmt.Errorf("body %q, %v", body, err)
		}
		return nil
	}
	errs := make(chan error, clients)
	for range clients {
		go func() { errs <- get() }()
	}
	inFlight.Wait() // every request is at the host at once
	close(release)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	idle := len(r.idle)
	r.mu.Unlock()
	if conns.Load() != clients || idle != clients {
		t.Fatalf("%d upstream connections, %d idle; want %d and %d", conns.Load(), idle, clients, clients)
	}

	// Reused while fresh; with a tiny limit the stale ones are closed and
	// a new one is dialed.
	inFlight.Add(2)
	if err := get(); err != nil || conns.Load() != clients {
		t.Fatalf("reuse: %v, %d upstream connections, want %d", err, conns.Load(), clients)
	}
	r.mu.Lock()
	r.idleLimit = time.Nanosecond
	r.mu.Unlock()
	if err := get(); err != nil || conns.Load() != clients+1 {
		t.Fatalf("after the idle limit: %v, %d upstream connections, want %d", err, conns.Load(), clients+1)
	}
	r.closeIdle()
	for i := range clients + 1 {
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
			t.Fatalf("%d of %d upstream connections closed", i, clients+1)
		}
	}
}

// TestRelayDoesNotPoolLeftovers: bytes after an answer's body mean the
// host and the relay disagree on where it ended; that connection is
// closed, not reused.
func TestRelayDoesNotPoolLeftovers(t *testing.T) {
	var conns atomic.Int32
	upstream := hostAnswering(t, &conns, func(int, int) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false
	})
	_, addr := startTestRelay(t, upstream)
	c, br := dialRelay(t, addr)
	for i := range 2 {
		if body, _, err := relayGet(c, br); err != nil || body != "ok" {
			t.Fatalf("request %d: body %q, %v", i, body, err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (none reused after leftovers)", n)
	}
}
