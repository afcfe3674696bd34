package metrics_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/metadatasec/gpa/agent/metrics"
	"github.com/metadatasec/gpa/msp"
)

// TestProxySeries: each proxy.Metrics call moves the series it names.
func TestProxySeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewProxy(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.RequestDone("imds", "deny", 403, 2*time.Millisecond)
	m.RequestDone("imds", "deny", 403, time.Millisecond)
	m.RequestDone("wireserver", "allow", 200, time.Millisecond)
	m.RequestDone("none", "", 999, time.Millisecond)
	m.UpstreamError(msp.EndpointHostGA, "dial")
	m.Epoch(12)
	m.ConnOpened()
	m.ConnOpened()
	m.ConnClosed()
	m.ConnRefused()
	m.Panic()
	want := `
# HELP gpa_proxy_requests_total Requests handled, by host endpoint, authorization decision and response status code.
# TYPE gpa_proxy_requests_total counter
gpa_proxy_requests_total{code="200",decision="allow",endpoint="wireserver"} 1
gpa_proxy_requests_total{code="403",decision="deny",endpoint="imds"} 2
gpa_proxy_requests_total{code="999",decision="",endpoint="none"} 1
# HELP gpa_proxy_upstream_errors_total Failures talking to a host endpoint, by endpoint and kind (dial, timeout, send, response).
# TYPE gpa_proxy_upstream_errors_total counter
gpa_proxy_upstream_errors_total{endpoint="hostga",kind="dial"} 1
# HELP gpa_proxy_key_epoch Epoch of the latch snapshot the last request was handled under.
# TYPE gpa_proxy_key_epoch gauge
gpa_proxy_key_epoch 12
# HELP gpa_proxy_open_connections Client connections currently open.
# TYPE gpa_proxy_open_connections gauge
gpa_proxy_open_connections 1
# HELP gpa_proxy_refused_connections_total Client connections refused because the connection limit was reached.
# TYPE gpa_proxy_refused_connections_total counter
gpa_proxy_refused_connections_total 1
# HELP gpa_proxy_connection_panics_total Client connections that ended in a recovered panic.
# TYPE gpa_proxy_connection_panics_total counter
gpa_proxy_connection_panics_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gpa_proxy_requests_total", "gpa_proxy_upstream_errors_total", "gpa_proxy_key_epoch",
		"gpa_proxy_open_connections", "gpa_proxy_refused_connections_total", "gpa_proxy_connection_panics_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "gpa_proxy_request_duration_seconds"); n != 3 {
		t.Errorf("%d latency series, want one per endpoint (3)", n)
	}
}

// TestProxyTwice: a second proxy on one registry is refused, not merged.
func TestProxyTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.NewProxy(reg); err != nil {
		t.Fatal(err)
	}
	_, err := metrics.NewProxy(reg)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second NewProxy: %v, want AlreadyRegisteredError", err)
	}
	if _, err := metrics.NewProxy(prometheus.WrapRegistererWithPrefix("second_", reg)); err != nil {
		t.Errorf("a second proxy under its own prefix: %v", err)
	}
}

// TestNewRegistry: the registry the agent serves has the runtime series.
func TestNewRegistry(t *testing.T) {
	fams, err := metrics.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	if !names["go_goroutines"] || !names["process_open_fds"] {
		t.Errorf("series %v lack go_goroutines or process_open_fds", names)
	}
}

// TestProxyConcurrentRequests: children resolved on first use by racing
// requests count every request once.
func TestProxyConcurrentRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewProxy(reg)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 500
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				code := 200
				if (w+i)%2 == 0 {
					code = 403
				}
				m.RequestDone("imds", "allow", code, time.Microsecond)
			}
		}()
	}
	for range workers {
		<-done
	}
	want := `
# HELP gpa_proxy_requests_total Requests handled, by host endpoint, authorization decision and response status code.
# TYPE gpa_proxy_requests_total counter
gpa_proxy_requests_total{code="200",decision="allow",endpoint="imds"} 2000
gpa_proxy_requests_total{code="403",decision="allow",endpoint="imds"} 2000
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gpa_proxy_requests_total"); err != nil {
		t.Error(err)
	}
}

func BenchmarkRequestDone(b *testing.B) {
	m, err := metrics.NewProxy(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.RequestDone("imds", "allow", 200, 300*time.Microsecond)
	}
}
