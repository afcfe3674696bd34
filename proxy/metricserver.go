package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// metricsPath is where ServeMetrics answers.
const metricsPath = "/metrics"

// maxMetricsConns bounds the connections ServeMetrics serves at once. A
// scraper needs one; the bound keeps a local user from holding many
// goroutines and descriptors of the agent open through the metrics port.
const maxMetricsConns = 16

// ServeMetrics serves h at GET and HEAD /metrics on ln until
// ctx ends; other paths get 404, other methods 405, and a malformed
// request 400 before the connection is closed. Requests are read with the
// proxy's own reader under the Config's header limits, ReadHeaderTimeout
// and IdleTimeout (keep-alive), and WriteTimeout. At most 16 connections
// are served at once; more are answered 503 and closed.
//
// It exists so the agent has one HTTP implementation and no net/http
// server: reaching http.Server (or http.Client) links crypto/tls, x509 and
// HTTP/2 into the binary, about 2 MB the agent never uses.
//
// When ctx ends it closes ln and every metrics connection and returns
// ctx.Err(). ln is closed on return. ServeMetrics is independent of
// Shutdown and Close, which stop the proxy listeners only.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener, h http.Handler) error {
	var (
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
		wg     sync.WaitGroup
	)
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		closed = true
		ln.Close()
		for c := range conns {
			c.Close()
		}
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer func() {
		stop()
		closeAll()
		wg.Wait()
	}()
	slots := make(chan struct{}, maxMetricsConns)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.acceptBackoff(err, &backoff, "proxy: metrics accept failed, retrying") {
				continue
			}
			return fmt.Errorf("proxy: metrics accept: %w", err)
		}
		backoff = 0
		select {
		case slots <- struct{}{}:
		default:
			s.refuse(nc)
			continue
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			nc.Close()
			<-slots
			return ctx.Err()
		}
		conns[nc] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer func() {
				mu.Lock()
				delete(conns, nc)
				mu.Unlock()
				nc.Close()
			}()
			s.serveMetricsConn(ctx, nc, h)
		}()
	}
}

// serveMetricsConn serves the requests of one metrics connection.
func (s *Server) serveMetricsConn(ctx context.Context, nc net.Conn, h http.Handler) {
	// net/http's server recovered handler panics; a panic in a collector
	// must not stop the agent now either.
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Metrics.Panic()
			s.cfg.Logger.Error("proxy: panic serving metrics", "remote", nc.RemoteAddr().String(),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	br := bufio.NewReaderSize(nc, 4<<10)
	bw := bufio.NewWriterSize(&deadlineWriter{conn: nc, timeout: s.cfg.WriteTimeout}, 4<<10)
	lim := &httpwire.HeadOptions{MaxURIBytes: s.cfg.MaxURIBytes, MaxHeaderBytes: s.cfg.MaxHeaderBytes, MaxHeaders: s.cfg.MaxHeaders}
	remote := nc.RemoteAddr().String()
	for first := true; ; first = false {
		wait := s.cfg.IdleTimeout
		if first {
			wait = s.cfg.ReadHeaderTimeout
		}
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		if _, err := br.Peek(1); err != nil {
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
		r, err := readRequestHead(br, lim)
		if err != nil {
			var he *httpwire.RequestError
			if errors.As(err, &he) {
				_ = httpwire.WriteResponse(bw, he.Status, nil, nil, true, false)
			}
			return
		}
		if !s.serveMetricsRequest(ctx, bw, r, remote, h) {
			return
		}
	}
}

// serveMetricsRequest answers one request and reports whether the
// connection stays open. Request bodies are not read, so a request that
// announces one closes the connection after the answer.
func (s *Server) serveMetricsRequest(ctx context.Context, bw *bufio.Writer, r *httpwire.Request, remote string, h http.Handler) bool {
	closeConn := r.Close || r.HasBody()
	path, _, _ := strings.Cut(r.URI, "?")
	if path != metricsPath {
		return httpwire.WriteResponse(bw, http.StatusNotFound, textPlain, []byte("404 page not found\n"), closeConn, r.Method == http.MethodHead) == nil && !closeConn
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr := append([]msp.HeaderField{{Name: "Allow", Value: "GET, HEAD"}}, textPlain...)
		return httpwire.WriteResponse(bw, http.StatusMethodNotAllowed, hdr, []byte("Method Not Allowed\n"), closeConn, false) == nil && !closeConn
	}
	// The handler always sees a GET, so a HEAD gets the same head and
	// Content-Length; httpwire.WriteResponse leaves the body out.
	status, hdr, body, err := httpwire.ServeHandler(ctx, h, r, &httpwire.ServeOptions{Method: http.MethodGet, RemoteAddr: remote})
	if err != nil {
		_ = httpwire.WriteResponse(bw, http.StatusBadRequest, nil, nil, true, false)
		return false
	}
	return httpwire.WriteResponse(bw, status, httpwire.HeaderFields(hdr), body, closeConn, r.Method == http.MethodHead) == nil && !closeConn
}

var textPlain = []msp.HeaderField{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
