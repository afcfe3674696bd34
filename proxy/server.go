package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Server is the authorizing, signing proxy. Create it with New; it is safe
// for concurrent use and can serve several listeners.
type Server struct {
	cfg  Config
	pool *pool

	requests atomic.Uint64
	closing  atomic.Bool
	// closed is closed with closing set, to end a wait for a slot.
	closed    chan struct{}
	closeOnce sync.Once
	// date is the last x-ms-azure-host-date value: it changes once a
	// second, and formatting it was one allocation per request.
	date atomic.Pointer[hostDate]
	// idleWorkers counts connection goroutines waiting for their next one.
	idleWorkers atomic.Int32

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*clientConn]struct{}
	active    sync.WaitGroup
	slots     chan struct{}
}

// New validates cfg and returns a server that is not serving yet.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:       c,
		pool:      newPool(c.Dial, c.DialTimeout, c.MaxIdlePerEndpoint, c.UpstreamIdleTimeout),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*clientConn]struct{}),
		slots:     make(chan struct{}, c.MaxConns),
		closed:    make(chan struct{}),
	}, nil
}

// RequestCount returns the number of requests received, those the proxy
// answered itself included: status.json's proxyConnectionsCount.
func (s *Server) RequestCount() uint64 { return s.requests.Load() }

// ListenAndServe listens on cfg.Addr until ctx ends or Shutdown is called.
func (s *Server) ListenAndServe(ctx context.Context) error {
	// No TCP keep-alive probes on accepted connections: they are loopback
	// clients the idle timeout already bounds, and enabling them costs
	// three setsockopt calls per connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("proxy: failed to bind TcpListener '%s': %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx ends or Shutdown is called, and
// serves them concurrently, each on a goroutine of its own while it lasts
// (goroutines are reused for later connections). When ctx ends it closes
// ln and every connection of the server at once (use Shutdown for a
// graceful stop) and returns ctx.Err(); after Shutdown or Close it returns
// ErrServerClosed. ln is closed on return.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrack(ln)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.closeConns(false)
	})
	defer stop()
	w := &workers{ctx: ctx, next: make(chan *clientConn), idle: &s.idleWorkers, done: make(chan struct{})}
	defer close(w.done)
	var backoff time.Duration
	var overloaded time.Time
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.acceptBackoff(err, &backoff, "proxy: accept failed, retrying") {
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		if !s.takeSlot(ctx, &overloaded) {
			if s.closing.Load() || ctx.Err() != nil {
				// Stopped while waiting: not a refusal, and the next
				// Accept fails on the closed listener.
				nc.Close()
				continue
			}
			s.cfg.Metrics.ConnRefused()
			s.refuse(nc)
			continue
		}
		if ctx.Err() != nil {
			// The slot may be one that ctx's end freed.
			<-s.slots
			nc.Close()
			continue
		}
		cc := &clientConn{srv: s, nc: nc}
		if !s.add(cc) {
			<-s.slots
			nc.Close()
			return ErrServerClosed
		}
		w.start(cc)
	}
}

// maxIdleWorkers bounds the goroutines kept waiting for the next
// connection after theirs ended.
const maxIdleWorkers = 32

// workers hands accepted connections to goroutines that served one
// before. A new goroutine per connection grew its stack again to what a
// request needs and allocated two buffers: with a new connection per
// request that was about 6 % of the proxy's CPU.
type workers struct {
	ctx context.Context
	// next is unbuffered, so a send succeeds only when a worker waits.
	next chan *clientConn
	// idle counts the server's waiting workers, of every Serve.
	idle *atomic.Int32
	// done is closed when Serve returns, which ends the waiting workers.
	done chan struct{}
}

func (w *workers) start(cc *clientConn) {
	select {
	case w.next <- cc:
	default:
		go w.run(cc)
	}
}

func (w *workers) run(cc *clientConn) {
	var bufs connBuffers
	for {
		cc.serve(w.ctx, &bufs)
		// While waiting, hold nothing of the connection that ended: its
		// caller, its audit record, its conn.
		cc = nil
		if bufs.br != nil {
			bufs.br.Reset(nil)
			bufs.bw.Reset(nil)
		}
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case cc = <-w.next:
			w.idle.Add(-1)
		case <-w.done:
			// The count is the server's: another Serve may still use it.
			w.idle.Add(-1)
			return
		}
	}
}

// connBuffers are a worker's client-side buffers, reset for each
// connection it serves.
type connBuffers struct {
	br *bufio.Reader
	bw *bufio.Writer
}

// acceptBackoff reports whether err is an accept failure that passes
// (a timeout, or out of descriptors) and, if so, waits before the next
// try: 5 ms doubling to 1 s, so a full descriptor table is not spun on.
func (s *Server) acceptBackoff(err error, backoff *time.Duration, msg string) bool {
	var ne net.Error
	if !(errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE)) {
		return false
	}
	*backoff = min(max(2**backoff, 5*time.Millisecond), time.Second)
	s.cfg.Logger.Warn(msg, "err", err, "backoff", *backoff)
	time.Sleep(*backoff)
	return true
}

// takeSlot takes a connection slot. At the limit it waits for one until
// MaxConnsWait after the overload began (overloaded, zero while slots are
// free): a burst of connections that each end quickly is served rather
// than refused, while the accept loop stays paused and later connections
// wait in the kernel's backlog. Once the window has passed, connections
// are refused at once until a slot is taken again.
func (s *Server) takeSlot(ctx context.Context, overloaded *time.Time) bool {
	select {
	case s.slots <- struct{}{}:
		*overloaded = time.Time{}
		return true
	default:
	}
	now := time.Now()
	if overloaded.IsZero() {
		*overloaded = now
	}
	wait := s.cfg.MaxConnsWait - now.Sub(*overloaded)
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		*overloaded = time.Time{}
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-s.closed:
	}
	return false
}

// markClosing makes the server refuse new work and ends waits for a slot.
func (s *Server) markClosing() {
	s.closing.Store(true)
	s.closeOnce.Do(func() { close(s.closed) })
}

// refuse answers a connection over the limit without reading from it.
func (s *Server) refuse(nc net.Conn) {
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	nc.Close()
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish, and returns when every connection is gone or ctx ends, in
// which case the remaining connections are closed and ctx.Err() returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.markClosing()
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.closeConns(true)
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			s.pool.closeIdle(true)
			return nil
		case <-ctx.Done():
			s.closeConns(false)
			<-done
			s.pool.closeIdle(true)
			return ctx.Err()
		case <-t.C:
			// A connection that finished its request since the last tick is
			// idle now.
			s.closeConns(true)
		}
	}
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.markClosing()
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.closeConns(false)
	s.active.Wait()
	s.pool.closeIdle(true)
	return nil
}

func (s *Server) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) untrack(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
	ln.Close()
}

func (s *Server) add(cc *clientConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[cc] = struct{}{}
	s.active.Add(1)
	s.cfg.Metrics.ConnOpened()
	return true
}

func (s *Server) remove(cc *clientConn) {
	s.mu.Lock()
	delete(s.conns, cc)
	s.mu.Unlock()
	s.cfg.Metrics.ConnClosed()
	<-s.slots
	s.active.Done()
}

// closeConns closes idle connections, or all of them.
func (s *Server) closeConns(idleOnly bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for cc := range s.conns {
		if !idleOnly || cc.idle.Load() {
			cc.nc.Close()
		}
	}
}

// clientConn is one accepted client connection and its caller.
type clientConn struct {
	srv    *Server
	nc     net.Conn
	dr     deadlineReader
	dw     deadlineWriter
	br     *bufio.Reader
	bw     *bufio.Writer
	caller *Caller
	// The audit record's connection fields, formatted once per connection.
	clientIP, dstIP, endpoint string
	clientPort                uint16
	// callerJSON is the audit line's connection and caller fields,
	// encoded with the connection's first record.
	callerJSON []byte
	// rec is the audit record of the request in progress, reused by the
	// next one: a SummarySink must not keep it, so it need not be
	// allocated per request.
	rec msp.AuditRecord
	// req is the request in progress and hdr the fields forwarded for it,
	// reused by the next request: nothing keeps them past finish.
	req httpwire.Request
	hdr []msp.HeaderField
	// idle is true while waiting for the next request, so Shutdown can
	// close the connection without cutting a request short.
	idle atomic.Bool
}

func (cc *clientConn) serve(ctx context.Context, bufs *connBuffers) {
	s := cc.srv
	defer s.remove(cc)
	defer cc.nc.Close()
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Metrics.Panic()
			s.cfg.Logger.Error("proxy: panic serving connection", "remote", cc.nc.RemoteAddr().String(),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	// The kernel's record of the connection is one-shot and can be evicted,
	// so the caller is resolved at accept time, not at the first request.
	caller, err := s.cfg.Resolver.Resolve(ctx, cc.nc)
	if err != nil {
		s.cfg.Logger.Info("proxy: caller not resolved; the connection may have been made to the listener directly",
			"remote", cc.nc.RemoteAddr().String(), "err", err)
	} else {
		cc.caller = caller
	}
	cc.dr = deadlineReader{conn: cc.nc}
	cc.dw = deadlineWriter{conn: cc.nc, timeout: s.cfg.WriteTimeout}
	if bufs.br == nil {
		bufs.br = bufio.NewReaderSize(&cc.dr, 4<<10)
		bufs.bw = bufio.NewWriterSize(&cc.dw, 4<<10)
	} else {
		bufs.br.Reset(&cc.dr)
		bufs.bw.Reset(&cc.dw)
	}
	cc.br, cc.bw = bufs.br, bufs.bw

	first := true
	for {
		cc.idle.Store(true)
		if s.closing.Load() {
			return
		}
		wait := s.cfg.IdleTimeout
		if first {
			wait = s.cfg.ReadHeaderTimeout
		}
		cc.dr.extend(time.Now(), wait)
		if _, err := cc.br.Peek(1); err != nil {
			return
		}
		cc.idle.Store(false)
		if !first && !headBuffered(cc.br) {
			// The rest of the head must come within ReadHeaderTimeout,
			// not the idle wait; a head that arrived whole needs no
			// other deadline (the first one's wait already was this).
			cc.dr.extend(time.Now(), s.cfg.ReadHeaderTimeout)
		}
		first = false
		req, err := readRequestHead(cc.br, &httpwire.HeadOptions{MaxURIBytes: s.cfg.MaxURIBytes, MaxHeaderBytes: s.cfg.MaxHeaderBytes, MaxHeaders: s.cfg.MaxHeaders}, &cc.req)
		if err != nil {
			var he *httpwire.RequestError
			if errors.As(err, &he) {
				s.requests.Add(1)
				cc.reject(he)
			}
			return
		}
		// The read deadline is left as it is: nothing reads from the
		// client until the next head (bodies set their own), and the
		// next wait moves it.
		if !cc.handle(ctx, req) {
			return
		}
	}
}

// reject answers a request that could not be parsed, and audits it.
func (cc *clientConn) reject(he *httpwire.RequestError) {
	rec := cc.newRecord(nil, time.Now())
	rec.ErrorDetails = he.Msg
	cc.writeSimple(he.Status, nil, nil, true)
	cc.finish(rec, he.Status)
}

// headBuffered reports whether br holds a whole request head already, the
// empty line that ends it included. Bytes that start with an empty line
// (which the reader skips before a request) never count: otherwise a
// client could send "\r\n\r\n" and then trickle its head under the idle
// wait instead of ReadHeaderTimeout.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	if len(b) == 0 || b[0] == '\r' || b[0] == '\n' {
		return false
	}
	return bytes.Contains(b, []byte("\r\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

func (cc *clientConn) logger() *slog.Logger { return cc.srv.cfg.Logger }

type hostDate struct {
	unix  int64
	value string
}

// hostDate returns msp.FormatDate(s.cfg.Now()), formatted once per second.
func (s *Server) hostDate() string {
	now := s.cfg.Now()
	sec := now.Unix()
	if d := s.date.Load(); d != nil && d.unix == sec {
		return d.value
	}
	d := &hostDate{unix: sec, value: msp.FormatDate(now)}
	s.date.Store(d)
	return d.value
}
