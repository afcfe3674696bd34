package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/proxy"
)

// metricsPath is where the metrics server answers.
const metricsPath = "/metrics"

// maxMetricsConns bounds the connections ServeMetrics serves at once. A
// scraper needs one; the bound keeps a local user from holding many
// goroutines and descriptors of the agent open through the metrics port.
const maxMetricsConns = 16

// metricsServer serves a handler (the agent's Prometheus registry) at GET
// and HEAD /metrics; other paths get 404, other methods 405, and a
// malformed request 400 before the connection is closed. Requests are read
// with internal/httpwire under the proxy's header limits and timeouts. At
// most 16 connections are served at once; more are answered 503 and
// closed.
//
// It exists so the agent has one HTTP implementation and no net/http
// server: reaching http.Server (or http.Client) links crypto/tls, x509 and
// HTTP/2 into the binary, about 2 MB the agent never uses.
type metricsServer struct {
	handler http.Handler
	logger  *slog.Logger
	// onPanic counts a connection that ended in a recovered panic.
	onPanic func()
	head    httpwire.HeadOptions
	// readHeader bounds reading a request head, idle the wait for the next
	// request on a keep-alive connection, write each write of an answer.
	readHeader, idle, write time.Duration
}

// newMetricsServer serves h with the proxy's default limits.
func newMetricsServer(h http.Handler, logger *slog.Logger, onPanic func()) *metricsServer {
	return &metricsServer{handler: h, logger: logger, onPanic: onPanic,
		head:       httpwire.HeadOptions{MaxURIBytes: proxy.DefaultMaxURIBytes, MaxHeaderBytes: proxy.DefaultMaxHeaderBytes, MaxHeaders: proxy.DefaultMaxHeaders},
		readHeader: proxy.DefaultReadHeaderTimeout, idle: proxy.DefaultIdleTimeout, write: proxy.DefaultWriteTimeout}
}

// serve serves ln until ctx ends, then closes ln and every metrics
// connection and returns ctx.Err(). ln is closed on return.
func (s *metricsServer) serve(ctx context.Context, ln net.Listener) error {
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
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger.Warn("agent: metrics accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("agent: metrics accept: %w", err)
		}
		backoff = 0
		select {
		case slots <- struct{}{}:
		default:
			_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			nc.Close()
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
			s.serveConn(ctx, nc)
		}()
	}
}

// serveMetricsConn serves the requests of one metrics connection.
func (s *metricsServer) serveConn(ctx context.Context, nc net.Conn) {
	// net/http's server recovered handler panics; a panic in a collector
	// must not stop the agent now either.
	defer func() {
		if v := recover(); v != nil {
			s.onPanic()
			s.logger.Error("agent: panic serving metrics", "remote", nc.RemoteAddr().String(),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	br := bufio.NewReaderSize(nc, 4<<10)
	bw := bufio.NewWriterSize(deadlineWriter{conn: nc, timeout: s.write}, 4<<10)
	remote := nc.RemoteAddr().String()
	for first := true; ; first = false {
		wait := s.idle
		if first {
			wait = s.readHeader
		}
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		if _, err := br.Peek(1); err != nil {
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(s.readHeader))
		r, err := httpwire.ReadRequestHead(br, &s.head)
		if err == nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			err = r.ToOriginForm()
		}
		if err != nil {
			var he *httpwire.RequestError
			if errors.As(err, &he) {
				_ = httpwire.WriteResponse(bw, he.Status, nil, nil, true, false)
			}
			return
		}
		if !s.serveRequest(ctx, bw, r, remote) {
			return
		}
	}
}

// serveMetricsRequest answers one request and reports whether the
// connection stays open. Request bodies are not read, so a request that
// announces one closes the connection after the answer.
func (s *metricsServer) serveRequest(ctx context.Context, bw *bufio.Writer, r *httpwire.Request, remote string) bool {
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
	status, hdr, body, err := httpwire.ServeHandler(ctx, s.handler, r, &httpwire.ServeOptions{Method: http.MethodGet, RemoteAddr: remote})
	if err != nil {
		_ = httpwire.WriteResponse(bw, http.StatusBadRequest, nil, nil, true, false)
		return false
	}
	return httpwire.WriteResponse(bw, status, httpwire.HeaderFields(hdr), body, closeConn, r.Method == http.MethodHead) == nil && !closeConn
}

var textPlain = []msp.HeaderField{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}

// deadlineWriter sets a write deadline before every write.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(p)
}
