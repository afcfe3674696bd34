package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/agent/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// startMetrics serves, on a loopback listener, a registry with the
// proxy's series and one counted request. It returns the listener's
// address, the listener and stop, which ends serve's ctx and returns what
// it returned (once it has, within 5 s); the cleanup stops it and checks
// for context.Canceled.
func startMetrics(t *testing.T, tweak func(*metricsServer)) (string, net.Listener, func() error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	pm, err := metrics.NewProxy(reg)
	if err != nil {
		t.Fatal(err)
	}
	pm.RequestDone("none", "", 400, time.Millisecond)
	srv := newMetricsServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), slog.New(slog.DiscardHandler), pm.Panic)
	if tweak != nil {
		tweak(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, ln) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("serve did not return within 5s of the cancel")
		}
	})
	t.Cleanup(func() {
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("serve returned %v, want context.Canceled", err)
		}
	})
	return ln.Addr().String(), ln, stop
}

// TestServeMetricsScrape: a Go client (asking for gzip, as it does by
// default) gets the text exposition with the proxy's request counter.
func TestServeMetricsScrape(t *testing.T) {
	addr, _, _ := startMetrics(t, nil)

	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("answer %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if !resp.Uncompressed {
		t.Errorf("the exposition was not gzipped for a client that asked")
	}
	if want := `gpa_proxy_requests_total{code="400",decision="",endpoint="none"} 1`; !strings.Contains(string(body), want) {
		t.Errorf("exposition lacks %s:\n%.500s", want, body)
	}
}

// exchange writes req on c and reads one response to method, body
// included.
func exchange(t *testing.T, c net.Conn, br *bufio.Reader, method, req string) (*http.Response, string, error) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// TestServeMetricsKeepAlive: two scrapes on one connection.
func TestServeMetricsKeepAlive(t *testing.T) {
	addr, _, _ := startMetrics(t, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, body, err := exchange(t, c, br, "GET", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		if err != nil {
			t.Fatalf("scrape %d: %v", i, err)
		}
		if resp.StatusCode != http.StatusOK || resp.Close || !strings.Contains(body, "gpa_proxy_open_connections") {
			t.Errorf("scrape %d: %s, close %v, body %.200q", i, resp.Status, resp.Close, body)
		}
	}
}

// TestServeMetricsAnswers: what each request gets, and whether the
// connection stays usable for a next request.
func TestServeMetricsAnswers(t *testing.T) {
	type answer struct {
		Status      int
		ContentType string // up to the first ';'
		Allow       string
		Body        bool // a body was sent
		Open        bool // a next request on the connection is answered
	}
	exposition := answer{Status: 200, ContentType: "text/plain", Body: true, Open: true}
	tests := []struct {
		name string
		req  string
		want answer
	}{
		{"GET", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", exposition},
		{"GET with a query", "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", exposition},
		{"GET absolute-form", "GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", exposition},
		{"HEAD: the head of GET, no body", "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
			answer{Status: 200, ContentType: "text/plain", Open: true}},
		{"HTTP/1.0 closes", "GET /metrics HTTP/1.0\r\n\r\n", answer{Status: 200, ContentType: "text/plain", Body: true}},
		{"Connection: close", "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			answer{Status: 200, ContentType: "text/plain", Body: true}},
		{"a body it does not read closes", "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
			answer{Status: 200, ContentType: "text/plain", Body: true}},
		{"other path", "GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n",
			answer{Status: 404, ContentType: "text/plain", Body: true, Open: true}},
		{"root", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", answer{Status: 404, ContentType: "text/plain", Body: true, Open: true}},
		{"POST", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
			answer{Status: 405, ContentType: "text/plain", Allow: "GET, HEAD", Body: true, Open: true}},
		{"DELETE", "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
			answer{Status: 405, ContentType: "text/plain", Allow: "GET, HEAD", Body: true, Open: true}},
		{"no Host", "GET /metrics HTTP/1.1\r\n\r\n", answer{Status: 400}},
		{"malformed request line", "GET/metrics\r\n\r\n", answer{Status: 400}},
		{"malformed header", "GET /metrics HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", answer{Status: 400}},
		{"HTTP/2", "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", answer{Status: 505}},
	}
	addr, _, _ := startMetrics(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			method, _, _ := strings.Cut(tt.req, " ")
			resp, body, err := exchange(t, c, br, method, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			ctype, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
			got := answer{Status: resp.StatusCode, ContentType: ctype, Allow: resp.Header.Get("Allow"), Body: body != ""}
			if method == "HEAD" && resp.ContentLength <= 0 {
				t.Errorf("HEAD answered Content-Length %d, want the exposition's", resp.ContentLength)
			}
			// A HEAD answer that carried a body anyway would make this
			// next answer unreadable.
			next, _, err := exchange(t, c, br, "GET", "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
			got.Open = err == nil && next.StatusCode == http.StatusNotFound
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestServeMetricsSlowHeader: a client that sends half a header is cut
// after ReadHeaderTimeout.
func TestServeMetricsSlowHeader(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr, _, _ := startMetrics(t, func(s *metricsServer) { s.readHeader = timeout })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	el := time.Since(start)
	if err != nil || len(b) != 0 {
		t.Errorf("read %q, %v; want the connection closed without an answer", b, err)
	}
	if el < timeout-20*time.Millisecond || el > timeout+time.Second {
		t.Errorf("cut after %v, want about %v", el, timeout)
	}
}

// TestServeMetricsCancel: ending ctx makes serve return, closes the
// listener and cuts open connections.
func TestServeMetricsCancel(t *testing.T) {
	addr, ln, stop := startMetrics(t, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, _, err := exchange(t, c, br, "GET", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("serve returned %v, want context.Canceled", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after return: %v, want net.ErrClosed", err)
	}
	// The idle keep-alive connection is closed, not left to IdleTimeout.
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after cancel: read %d, %v; want EOF", n, err)
	}
}

// TestServeMetricsConnLimit: connections over the bound get 503 and are
// closed; the ones within it are served.
func TestServeMetricsConnLimit(t *testing.T) {
	addr, _, _ := startMetrics(t, nil)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Connections are accepted in the order they were made, so these take
	// every slot before the next one is accepted.
	for range maxMetricsConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(extra)
	if err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 503 ") {
		t.Errorf("connection over the bound: %q, %v; want 503 and close", b, err)
	}
	// The first connection was accepted within the bound: it is served.
	resp, _, err := exchange(t, conns[0], bufio.NewReader(conns[0]), "GET", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("connection within the bound: %v, %v", resp, err)
	}
}
