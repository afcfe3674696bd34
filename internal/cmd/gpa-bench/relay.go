package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The relay row answers one question the nginx row cannot: how fast is a
// Go proxy with one goroutine per connection on this machine when it does
// nothing but forward? It does only what forwarding the harness's GET
// takes (read the head, write it upstream on a pooled connection, read the
// answer's head and Content-Length body, write it back) and none of the
// agent's work: no identification, authorization, signing, audit record,
// metrics or deadlines. It is a comparison, not a goal, and not something
// to deploy: it refuses every request or answer it does not need to
// understand by closing the connection.

// relayMaxHead bounds a request's or an answer's head; the readers are as
// large, so that one long line is refused for its length alone.
const relayMaxHead = 8 << 10

// errRelayUnsupported is a request or answer outside what the relay takes:
// another method than GET, a body on a request, an answer without a body
// or without Content-Length, an oversize head.
var errRelayUnsupported = errors.New("relay: unsupported message")

// relay forwards to one upstream address.
type relay struct {
	upstream string
	// logf, when set, reports the first unsupported message.
	logf func(format string, args ...any)

	unsupported atomic.Int64 // connections closed on an unsupported message

	mu   sync.Mutex
	idle []*relayUpstream // most recently used last
	// idleLimit is relayIdleLimit when zero.
	idleLimit time.Duration
}

type relayUpstream struct {
	conn   net.Conn
	br     *bufio.Reader
	idleAt time.Time
}

const (
	// relayMaxIdle bounds the pool, as nginx's "keepalive 128" does.
	relayMaxIdle = 128
	// relayIdleLimit retires pooled connections before the host's own
	// idle timeout (msptest's is 30 s) can close one under a request: the
	// relay does not send a request twice.
	relayIdleLimit = 10 * time.Second
)

// serve accepts until ctx ends or ln fails, and returns once every
// connection it accepted is closed.
func (r *relay) serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Deferred after wg.Wait, so they run first: a failing listener also
	// ends the connections it accepted.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := &relayConn{c: c}
			stopConn := context.AfterFunc(ctx, rc.abort)
			defer stopConn()
			defer c.Close()
			err := r.serveConn(ctx, rc)
			if errors.Is(err, errRelayUnsupported) && r.unsupported.Add(1) == 1 && r.logf != nil {
				r.logf("relay: first connection closed on an unsupported message: %v", err)
			}
		}()
	}
}

// relayConn is a client connection and the upstream connection it uses at
// the moment, both closed by abort when the relay stops.
type relayConn struct {
	c  net.Conn
	up atomic.Pointer[relayUpstream]
}

func (rc *relayConn) abort() {
	rc.c.Close()
	if u := rc.up.Load(); u != nil {
		u.conn.Close()
	}
}

// serveConn relays requests from one client connection until it closes or
// something unsupported arrives.
func (r *relay) serveConn(ctx context.Context, rc *relayConn) error {
	br := bufio.NewReaderSize(rc.c, relayMaxHead)
	buf := make([]byte, 0, 4096)
	for {
		var closeAfter bool
		var err error
		buf, closeAfter, err = readRelayRequest(br, buf[:0])
		if err != nil {
			return err
		}
		if buf, err = r.roundTrip(ctx, rc, buf); err != nil {
			return err
		}
		if _, err := rc.c.Write(buf); err != nil {
			return err
		}
		if closeAfter {
			return nil
		}
	}
}

// roundTrip sends the request head in req upstream and returns the whole
// answer, reusing req's storage.
func (r *relay) roundTrip(ctx context.Context, rc *relayConn, req []byte) ([]byte, error) {
	u, err := r.get(ctx)
	if err != nil {
		return nil, err
	}
	// Published before ctx is checked, so that either this check or abort
	// sees the other and a stopping relay never waits on the host.
	rc.up.Store(u)
	defer rc.up.Store(nil)
	if err := ctx.Err(); err != nil {
		u.conn.Close()
		return nil, err
	}
	if _, err := u.conn.Write(req); err != nil {
		u.conn.Close()
		return nil, err
	}
	resp, reuse, err := readRelayResponse(u.br, req[:0])
	// Bytes beyond the answer would be read as the next one's.
	if err != nil || !reuse || u.br.Buffered() > 0 {
		u.conn.Close()
		return resp, err
	}
	r.put(u)
	return resp, nil
}

func (r *relay) get(ctx context.Context) (*relayUpstream, error) {
	now := time.Now()
	r.mu.Lock()
	limit := r.idleLimit
	if limit == 0 {
		limit = relayIdleLimit
	}
	for n := len(r.idle); n > 0; n-- {
		u := r.idle[n-1]
		r.idle = r.idle[:n-1]
		if now.Sub(u.idleAt) < limit {
			r.mu.Unlock()
			return u, nil
		}
		u.conn.Close()
	}
	r.mu.Unlock()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.upstream)
	if err != nil {
		return nil, fmt.Errorf("relay: dial the host: %w", err)
	}
	return &relayUpstream{conn: c, br: bufio.NewReaderSize(c, relayMaxHead)}, nil
}

func (r *relay) put(u *relayUpstream) {
	u.idleAt = time.Now()
	r.mu.Lock()
	if len(r.idle) < relayMaxIdle {
		r.idle = append(r.idle, u)
		u = nil
	}
	r.mu.Unlock()
	if u != nil {
		u.conn.Close()
	}
}

// closeIdle closes the pooled upstream connections.
func (r *relay) closeIdle() {
	r.mu.Lock()
	idle := r.idle
	r.idle = nil
	r.mu.Unlock()
	for _, u := range idle {
		u.conn.Close()
	}
}

// readHeadLine reads one line of a head that already holds n bytes.
func readHeadLine(br *bufio.Reader, n int, what string) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull || err == nil && n+len(line) > relayMaxHead:
		return nil, fmt.Errorf("%w: %s head over %d bytes", errRelayUnsupported, what, relayMaxHead)
	case err == io.EOF && n+len(line) > 0:
		return nil, fmt.Errorf("relay: %s head cut short: %w", what, io.ErrUnexpectedEOF)
	case err != nil:
		return nil, fmt.Errorf("relay: read %s head: %w", what, err)
	}
	return line, nil
}

// readRelayRequest appends a GET's head to dst as it goes upstream: without
// its Connection header, as nginx's `proxy_set_header Connection ""` sends
// it, so that the upstream connection stays reusable. io.EOF is a client
// that closed between requests.
func readRelayRequest(br *bufio.Reader, dst []byte) (head []byte, closeAfter bool, err error) {
	first := true
	for {
		line, err := readHeadLine(br, len(dst), "request")
		if err != nil {
			if first && errors.Is(err, io.EOF) {
				return nil, false, io.EOF
			}
			return nil, false, err
		}
		if first {
			first = false
			// A HEAD's answer has a Content-Length and no body: reading
			// that many bytes would wait for the next answer.
			if !bytes.HasPrefix(line, []byte("GET ")) {
				return nil, false, fmt.Errorf("%w: method other than GET", errRelayUnsupported)
			}
			if bytes.HasSuffix(bytes.TrimRight(line, "\r\n"), []byte("HTTP/1.0")) {
				closeAfter = true
			}
			dst = append(dst, line...)
			continue
		}
		if isBlankLine(line) {
			return append(dst, line...), closeAfter, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, false, fmt.Errorf("%w: header line without a colon", errRelayUnsupported)
		}
		switch {
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.Contains(bytes.ToLower(value), []byte("close")) {
				closeAfter = true
			}
			continue
		case bytes.EqualFold(name, []byte("Content-Length")) && string(bytes.TrimSpace(value)) != "0",
			bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return nil, false, fmt.Errorf("%w: request with a body", errRelayUnsupported)
		}
		dst = append(dst, line...)
	}
}

// readRelayResponse appends an answer, head and Content-Length body, to
// dst, without its Connection header: that is about the upstream
// connection, which reuse reports can serve another request.
func readRelayResponse(br *bufio.Reader, dst []byte) (resp []byte, reuse bool, err error) {
	length := -1
	reuse = true
	for first := true; ; first = false {
		line, err := readHeadLine(br, len(dst), "answer")
		if err != nil {
			return nil, false, err
		}
		if first {
			// "HTTP/1.1 200 OK": 1xx, 204 and 304 carry no body whatever
			// their Content-Length says.
			proto, rest, _ := bytes.Cut(line, []byte(" "))
			code, _, _ := bytes.Cut(rest, []byte(" "))
			st, err := strconv.Atoi(string(bytes.TrimRight(code, "\r\n")))
			if err != nil || st < 200 || st > 999 || st == 204 || st == 304 {
				return nil, false, fmt.Errorf("%w: status line %q", errRelayUnsupported, bytes.TrimRight(line, "\r\n"))
			}
			if string(proto) == "HTTP/1.0" {
				reuse = false
			}
			dst = append(dst, line...)
			continue
		}
		if isBlankLine(line) {
			dst = append(dst, line...)
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		switch {
		case !ok:
			return nil, false, fmt.Errorf("%w: answer header line without a colon", errRelayUnsupported)
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.Contains(bytes.ToLower(value), []byte("close")) {
				reuse = false
			}
			continue
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil || n < 0 || length >= 0 {
				return nil, false, fmt.Errorf("%w: Content-Length %q", errRelayUnsupported, bytes.TrimSpace(value))
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return nil, false, fmt.Errorf("%w: Transfer-Encoding", errRelayUnsupported)
		}
		dst = append(dst, line...)
	}
	if length < 0 || length > 1<<20 {
		return nil, false, fmt.Errorf("%w: answer without a usable Content-Length", errRelayUnsupported)
	}
	n := len(dst)
	dst = slices.Grow(dst, length)[:n+length]
	if _, err := io.ReadFull(br, dst[n:]); err != nil {
		return nil, false, fmt.Errorf("relay: answer body: %w", err)
	}
	return dst, reuse, nil
}

func isBlankLine(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

// runRelayCommand is the hidden subcommand the harness starts for the
// relay row, in a process of its own so that its CPU is counted apart and
// it runs with Go's default GOMAXPROCS: listen address and upstream
// address in argv; it serves until ctx ends (SIGTERM).
func runRelayCommand(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) != 2 {
		return errors.New("relay: want a listen and an upstream address")
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r := &relay{upstream: args[1], logf: func(format string, args ...any) {
		fmt.Fprintf(stderr, format+"\n", args...)
	}}
	defer r.closeIdle()
	err = r.serve(ctx, ln)
	if n := r.unsupported.Load(); n > 0 {
		fmt.Fprintf(stderr, "relay: %d connections closed on an unsupported message\n", n)
	}
	return err
}
