package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
)

// DialFunc opens a TCP connection to a host endpoint. The production dialer
// is a plain net.Dialer: the agent's own process is exempt from the kernel
// redirect, so its connections reach the real endpoint.
type DialFunc func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)

// upstreamConn is one keep-alive connection to a host endpoint.
type upstreamConn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	dr     deadlineReader
	dw     deadlineWriter
	dst    netip.AddrPort
	reused bool
	idleAt time.Time
	// resp is the response being read, reused by the next one.
	resp httpwire.Response
}

// pool keeps idle keep-alive connections per host endpoint, so a client that
// opens a new connection per request does not make the proxy pay a TCP
// handshake upstream each time. Idle connections hold no goroutine.
type pool struct {
	dial        DialFunc
	dialTimeout time.Duration
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[netip.AddrPort][]*upstreamConn
	closed bool
}

func newPool(dial DialFunc, dialTimeout time.Duration, maxIdle int, idleTimeout time.Duration) *pool {
	return &pool{dial: dial, dialTimeout: dialTimeout, maxIdle: maxIdle, idleTimeout: idleTimeout,
		idle: make(map[netip.AddrPort][]*upstreamConn)}
}

// errDial marks failures to open an upstream connection (answered 502).
var errDial = errors.New("proxy: cannot connect to host endpoint")

// peekAfter is how long a connection may sit idle before get checks it
// with a system call. A request on a connection the host has just closed
// fails with nothing sent back, and roundTrip sends a buffered request
// again on a new connection; under load a connection waits microseconds
// between requests, and the check was one system call in ten.
const peekAfter = time.Second

// get returns an idle connection to dst, or dials a new one. A connection
// that sat idle for peekAfter or more, or any connection when the request
// cannot be sent twice (mustPeek: its body is streamed), is first checked
// to still be open.
func (p *pool) get(ctx context.Context, dst netip.AddrPort, mustPeek bool) (*upstreamConn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		list := p.idle[dst]
		if len(list) == 0 {
			p.mu.Unlock()
			break
		}
		uc := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[dst] = list[:len(list)-1]
		p.mu.Unlock()
		idle := now.Sub(uc.idleAt)
		if idle < p.idleTimeout {
			if idle < peekAfter && !mustPeek {
				uc.reused = true
				return uc, nil
			}
			uc.clearDeadlines()
			if alive(uc) {
				uc.reused = true
				return uc, nil
			}
		}
		uc.conn.Close()
	}
	dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	c, err := p.dial(dctx, dst)
	if err != nil {
		return nil, errors.Join(errDial, err)
	}
	uc := &upstreamConn{conn: c, dst: dst, dr: deadlineReader{conn: c}, dw: deadlineWriter{conn: c}}
	uc.br = bufio.NewReaderSize(&uc.dr, 8<<10)
	uc.bw = bufio.NewWriterSize(&uc.dw, 8<<10)
	return uc, nil
}

// clearDeadlines removes the deadlines an idle connection kept, which
// may have passed and would fail the peek.
func (uc *upstreamConn) clearDeadlines() {
	if !uc.dr.armed.at.IsZero() || !uc.dw.armed.at.IsZero() {
		uc.dr.armed.at, uc.dw.armed.at = time.Time{}, time.Time{}
		_ = uc.conn.SetDeadline(time.Time{})
	}
}

// put returns a connection whose last response was read completely.
func (p *pool) put(uc *upstreamConn) {
	if uc.br.Buffered() > 0 {
		// The host sent bytes nobody asked for; the stream is out of sync.
		uc.conn.Close()
		return
	}
	// The deadlines stay armed: an idle connection has no reader, and
	// the next request moves them when they no longer fit (get clears
	// them before peeking at a connection that sat idle).
	uc.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.dst]) >= p.maxIdle {
		p.mu.Unlock()
		uc.conn.Close()
		return
	}
	p.idle[uc.dst] = append(p.idle[uc.dst], uc)
	p.mu.Unlock()
}

// closeIdle closes every idle connection; with final it also refuses later
// puts.
func (p *pool) closeIdle(final bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = make(map[netip.AddrPort][]*upstreamConn)
	if final {
		p.closed = true
	}
	p.mu.Unlock()
	for _, list := range idle {
		for _, uc := range list {
			uc.conn.Close()
		}
	}
}

// alive peeks at an idle connection without blocking: a host that closed it,
// or sent unsolicited bytes, makes it unusable. Without this check the first
// request after the host's idle timeout would fail.
func alive(uc *upstreamConn) bool {
	sc, ok := uc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	cerr := rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return cerr == nil && ok
}
