package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func TestArmedNext(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	const timeout = 8 * time.Second // slack 1 s
	type step struct {
		after time.Duration // since t0
		set   bool
		at    time.Duration // since t0, when set
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first arms late by the slack", []step{{0, true, 9 * time.Second}}},
		{"kept while it fits", []step{{0, true, 9 * time.Second}, {500 * time.Millisecond, false, 0}, {time.Second, false, 0}}},
		{"moved once it would fire early", []step{{0, true, 9 * time.Second}, {time.Second + time.Nanosecond, true, 10*time.Second + time.Nanosecond}}},
		{"moved when the clock went back", []step{{time.Second, true, 10 * time.Second}, {-time.Second, true, 8 * time.Second}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a armed
			var got, want []step
			for _, s := range tc.steps {
				at, ok := a.next(t0.Add(s.after), timeout)
				g := step{after: s.after, set: ok}
				if ok {
					g.at = at.Sub(t0)
				}
				got, want = append(got, g), append(want, s)
			}
			if d := cmp.Diff(want, got, cmp.AllowUnexported(step{})); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
	// A shorter timeout than the armed one (idle wait, then a head) is
	// never left to fire late by more than the slack.
	var a armed
	a.next(t0, time.Minute)
	at, ok := a.next(t0, 10*time.Second)
	if !ok || at.After(t0.Add(10*time.Second+deadlineSlack(10*time.Second))) {
		t.Errorf("after a minute's deadline, a 10 s one gave %v, %v", at.Sub(t0), ok)
	}
}

// deadlineCounter counts the deadlines set on the connections it made.
type deadlineCounter struct{ sets atomic.Int64 }

type countingConn struct {
	net.Conn
	c *deadlineCounter
}

func (c countingConn) SetDeadline(t time.Time) error {
	c.c.sets.Add(1)
	return c.Conn.SetDeadline(t)
}

func (c countingConn) SetReadDeadline(t time.Time) error {
	c.c.sets.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func (c countingConn) SetWriteDeadline(t time.Time) error {
	c.c.sets.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

type countingListener struct {
	net.Listener
	c *deadlineCounter
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.c}, nil
}

// TestKeepAliveDeadlinesAmortized: a busy keep-alive connection moves its
// deadlines a few times, not several times per request, on the client
// side and upstream alike.
func TestKeepAliveDeadlinesAmortized(t *testing.T) {
	host := newFakeHost(t)
	host.noVerify = true
	client, upstream := &deadlineCounter{}, &deadlineCounter{}
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.IMDSAddr),
		wrap: func(ln net.Listener) net.Listener { return countingListener{ln, client} },
		tweak: func(c *Config) {
			dial := c.Dial
			c.Dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
				nc, err := dial(ctx, dst)
				if err != nil {
					return nil, err
				}
				return countingConn{nc, upstream}, nil
			}
		}})
	key := testKey(t, 1)
	tp.snap.Store(snapshotFor(t, 1, nil, &key))
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	const n = 200
	for range n {
		if _, err := io.WriteString(c, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// The first head, the idle wait and the client write arm once each;
	// upstream, the write and the read. Requests within one slack of the
	// default timeouts (over a second) move nothing more.
	if got := client.sets.Load(); got > 6 {
		t.Errorf("client connection: %d deadlines set for %d requests", got, n)
	}
	if got := upstream.sets.Load(); got > 6 {
		t.Errorf("upstream connections: %d deadlines set for %d requests", got, n)
	}
}

func TestHeadBuffered(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"GET / HTTP/1.1\nHost: x\n\n", true},
		{"GET / HTTP/1.1\r\nHost: x\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r", false},
		// Leading empty lines are skipped by the reader: they end no head.
		{"\r\n\r\nGET / HTTP/1.1\r\nX: ", false},
		{"\n\nGET / HTTP/1.1\nX: ", false},
	} {
		br := bufio.NewReader(strings.NewReader(tc.in))
		br.Peek(1)
		if got := headBuffered(br); got != tc.want {
			t.Errorf("headBuffered(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
