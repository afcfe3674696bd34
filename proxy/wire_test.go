package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

var fuzzLimits = httpwire.HeadOptions{MaxURIBytes: 1024, MaxHeaderBytes: 2048, MaxHeaders: 20}

// FuzzReadRequestHead: any input either fails with an error or yields a
// request whose forwarded headers hold no framing, hop-by-hop or MSP header
// and whose target is origin-form, within the limits.
func FuzzReadRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET http://169.254.169.254/x HTTP/1.1\r\nHost: x\r\nConnection: X-A\r\nX-A: 1\r\n\r\n",
		"GET / HTTP/1.0\r\nx-ms-azure-host-authorization: a\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := readRequestHead(bufio.NewReader(strings.NewReader(string(data))), &fuzzLimits, new(httpwire.Request))
		if err != nil {
			return
		}
		if r.Chunked && r.HadCL {
			t.Fatalf("both chunked and Content-Length accepted")
		}
		if len(r.URI) > fuzzLimits.MaxURIBytes || r.HeadBytes > fuzzLimits.MaxHeaderBytes+fuzzLimits.MaxURIBytes+64 {
			t.Fatalf("limits exceeded: uri %d, header bytes %d", len(r.URI), r.HeadBytes)
		}
		if msp.MethodAllowed(r.Method) && !strings.HasPrefix(r.URI, "/") {
			t.Fatalf("target %q is not origin-form", r.URI)
		}
		for _, h := range r.Header {
			if hopByHop[strings.ToLower(h.Name)] {
				t.Fatalf("header %q survived", h.Name)
			}
			if strings.ContainsAny(h.Value, "\r\n") {
				t.Fatalf("header value %q has a line break", h.Value)
			}
		}
	})
}

// TestHTTP10AndIdleTimeout: an HTTP/1.0 client without Host gets one, the
// connection closes after the response; an idle keep-alive connection is
// closed after IdleTimeout.
func TestHTTP10AndIdleTimeout(t *testing.T) {
	host := newFakeHost(t)
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr), tweak: func(c *Config) { c.IdleTimeout = 100 * time.Millisecond }})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))
	resp := tp.raw(t, "GET /metadata/instance HTTP/1.0\r\n\r\n")
	if rawStatus(resp) != 200 || !strings.Contains(resp, "Connection: close") {
		t.Errorf("HTTP/1.0: %q", resp)
	}
	if h, _ := host.requests()[0].Msg.Get("Host"); h != "169.254.169.254" {
		t.Errorf("Host %q", h)
	}

	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	r, err := http.ReadResponse(br, nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("%v %v", r, err)
	}
	io.Copy(io.Discard, r.Body)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("idle connection closed after %v", el)
	}
}

// TestNewConfig: the required hooks are required.
func TestNewConfig(t *testing.T) {
	snaps := func() *keylatch.Snapshot { return nil }
	for _, cfg := range []Config{{}, {Resolver: &StaticResolver{}}, {Latch: SnapshotFunc(snaps)}} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	s, err := New(Config{Resolver: &StaticResolver{}, Latch: SnapshotFunc(snaps)})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Addr != msp.ProxyAddr.String() || s.cfg.MaxBodyBytes != 100<<10 || s.cfg.MaxSkipSigBodyBytes != 100<<20 {
		t.Errorf("defaults: %+v", s.cfg)
	}
}

// TestListenAndServe: the proxy listens on Addr, answers there, and stops
// listening when ctx ends.
func TestListenAndServe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := New(Config{Addr: addr, Resolver: &StaticResolver{},
		Latch: SnapshotFunc(func() *keylatch.Snapshot { return nil })})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx) }()
	var c net.Conn
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if rawStatus(string(b)) != 421 {
		t.Errorf("direct request: %q", b)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ListenAndServe: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("still listening after ListenAndServe returned")
	}
}

// TestIsHopByHop: the allocation-free lookup agrees with the table in any
// letter case, which it can only do while every name fits its buffer.
func TestIsHopByHop(t *testing.T) {
	for name := range hopByHop {
		for _, v := range []string{name, strings.ToUpper(name), strings.ToUpper(name[:1]) + name[1:]} {
			if !isHopByHop(v) {
				t.Errorf("isHopByHop(%q) = false", v)
			}
		}
	}
	for _, v := range []string{"Host", "Metadata", "Content-Type", "", strings.Repeat("x", 40), "connectionx"} {
		if isHopByHop(v) {
			t.Errorf("isHopByHop(%q) = true", v)
		}
	}
}

// TestHostDateCache: the cached x-ms-azure-host-date is always what
// msp.FormatDate gives for the server's clock, across second boundaries
// and a clock that steps back.
func TestHostDateCache(t *testing.T) {
	var now time.Time
	s := &Server{cfg: Config{Now: func() time.Time { return now }}}
	base := time.Date(2026, 11, 25, 23, 59, 58, 900e6, time.UTC)
	for _, d := range []time.Duration{0, 50 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond,
		1100 * time.Millisecond, 1101 * time.Millisecond, -time.Hour, 0, 48 * time.Hour} {
		now = base.Add(d)
		if got, want := s.hostDate(), msp.FormatDate(now); got != want {
			t.Errorf("at %v: %q, want %q", now, got, want)
		}
	}
}

// TestRequestClose: whether the client asked to close after the request.
func TestRequestClose(t *testing.T) {
	for _, tc := range []struct {
		proto, conn string
		want        bool
	}{
		{"HTTP/1.1", "", false},
		{"HTTP/1.1", "close", true},
		{"HTTP/1.1", "keep-alive", false},
		{"HTTP/1.0", "", true},
		{"HTTP/1.0", "Keep-Alive", false},
		{"HTTP/1.0", "close, keep-alive", true},
		{"HTTP/1.0", "keep-alive, close", true},
		{"HTTP/1.1", "keep-alive, CLOSE", true},
	} {
		head := "GET / " + tc.proto + "\r\nHost: x\r\n"
		if tc.conn != "" {
			head += "Connection: " + tc.conn + "\r\n"
		}
		r, err := readRequestHead(bufio.NewReader(strings.NewReader(head+"\r\n")), &fuzzLimits, new(httpwire.Request))
		if err != nil {
			t.Fatalf("%s %q: %v", tc.proto, tc.conn, err)
		}
		if r.Close != tc.want {
			t.Errorf("%s Connection %q: close %v, want %v", tc.proto, tc.conn, r.Close, tc.want)
		}
	}
}
