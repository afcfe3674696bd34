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
)

// The relay row answers one question the nginx row cannot: how fast can a
// Go proxy with one goroutine per connection be on this machine at all?
// It does only what forwarding the harness's GET takes (read the head,
// write it upstream on a pooled connection, read the answer's head and
// Content-Length body, write it back) and none of the agent's work: no
// identification, authorization, signing, audit record or metrics. It is
// a comparison, not a goal, and not something to deploy: it refuses every
// request or answer it does not need to understand by closing the
// connection.

// relayMaxHead bounds a request's or an answer's head.
const relayMaxHead = 8 << 10

// errRelayUnsupported is a request or answer outside what the relay takes:
// a body on a request, an answer without Content-Length, an oversize head.
var errRelayUnsupported = errors.New("relay: unsupported message")

// relay forwards to one upstream address.
type relay struct {
	upstream string
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)

	mu   sync.Mutex
	idle []*relayUpstream // most recently used last
}

type relayUpstream struct {
	conn net.Conn
	br   *bufio.Reader
}

// relayMaxIdle bounds the pool, as nginx's "keepalive 128" does.
const relayMaxIdle = 128

// serve accepts until ln fails (closed by the caller when ctx ends).
func (r *relay) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
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
			defer c.Close()
			stopConn := context.AfterFunc(ctx, func() { c.Close() })
			defer stopConn()
			_ = r.serveConn(ctx, c)
		}()
	}
}

// serveConn relays requests from one client connection until it closes or
// something unsupported arrives.
func (r *relay) serveConn(ctx context.Context, c net.Conn) error {
	br := bufio.NewReaderSize(c, 4096)
	buf := make([]byte, 0, 4096)
	for {
		var closeAfter bool
		var err error
		buf, closeAfter, err = readRelayRequest(br, buf[:0])
		if err != nil {
			return err
		}
		if buf, err = r.roundTrip(ctx, buf); err != nil {
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
		if closeAfter {
			return nil
		}
	}
}

// roundTrip sends the request head in req upstream and returns the whole
// answer, reusing req's storage.
func (r *relay) roundTrip(ctx context.Context, req []byte) ([]byte, error) {
	u, err := r.get(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := u.conn.Write(req); err != nil {
		u.conn.Close()
		return nil, err
	}
	resp, reuse, err := readRelayResponse(u.br, req[:0])
	if err != nil || !reuse {
		u.conn.Close()
		return resp, err
	}
	r.put(u)
	return resp, nil
}

func (r *relay) get(ctx context.Context) (*relayUpstream, error) {
	r.mu.Lock()
	if n := len(r.idle); n > 0 {
		u := r.idle[n-1]
		r.idle = r.idle[:n-1]
		r.mu.Unlock()
		return u, nil
	}
	r.mu.Unlock()
	dial := r.dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, "tcp", r.upstream)
	if err != nil {
		return nil, err
	}
	return &relayUpstream{conn: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

func (r *relay) put(u *relayUpstream) {
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

// readRelayRequest appends a request head to dst as it goes upstream:
// without its Connection header, as nginx's `proxy_set_header Connection
// ""` sends it, so that the upstream connection stays reusable. A request
// with a body is refused.
func readRelayRequest(br *bufio.Reader, dst []byte) (head []byte, closeAfter bool, err error) {
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if first && err == io.EOF && len(line) == 0 {
				return nil, false, io.EOF
			}
			return nil, false, fmt.Errorf("%w: request head: %v", errRelayUnsupported, err)
		}
		if len(dst)+len(line) > relayMaxHead {
			return nil, false, fmt.Errorf("%w: request head over %d bytes", errRelayUnsupported, relayMaxHead)
		}
		if first {
			first = false
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
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, false, fmt.Errorf("%w: answer head: %v", errRelayUnsupported, err)
		}
		if len(dst)+len(line) > relayMaxHead {
			return nil, false, fmt.Errorf("%w: answer head over %d bytes", errRelayUnsupported, relayMaxHead)
		}
		if first {
			if bytes.HasPrefix(line, []byte("HTTP/1.0 ")) {
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
// its GOMAXPROCS is the default, as the agent's is: listen address and
// upstream address in argv; it serves until ctx ends (SIGTERM).
func runRelayCommand(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return errors.New("relay: want a listen and an upstream address")
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	r := &relay{upstream: args[1]}
	defer r.closeIdle()
	return r.serve(ctx, ln)
}
