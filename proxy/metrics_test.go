package proxy

import (
	"bufio"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/msp"
)

func scrape(t testing.TB, s *Server) string {
	t.Helper()
	rr := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	return rr.Body.String()
}

// TestMetrics: requests are counted by endpoint, decision and status, with
// latency, upstream errors and the key epoch.
func TestMetrics(t *testing.T) {
	host := newFakeHost(t)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 9, denyTokenRules(), nil))
	tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.raw(t, "GET /metadata/identity HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.srv.pool.closeIdle(false)
	tp.setHost(msp.IMDSAddr, "127.0.0.1:1")
	tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.waitRecords(t, 3)
	out := scrape(t, tp.srv)
	for _, want := range []string{
		`gpa_proxy_requests_total{code="200",decision="allow",endpoint="imds"} 1`,
		`gpa_proxy_requests_total{code="403",decision="deny",endpoint="imds"} 1`,
		`gpa_proxy_requests_total{code="502",decision="allow",endpoint="imds"} 1`,
		`gpa_proxy_upstream_errors_total{endpoint="imds",kind="dial"} 1`,
		`gpa_proxy_request_duration_seconds_count{endpoint="imds"} 3`,
		`gpa_proxy_key_epoch 9`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(out, "00000000-0000") {
		t.Errorf("metrics mention a key")
	}
}

// TestMetricsTextFormat pins the exposition: sorted labels, escaped
// values, cumulative histogram buckets ending in +Inf, _sum and _count, and
// gauges that go both ways.
func TestMetricsTextFormat(t *testing.T) {
	v := newCounterVec("c_total", "A counter.", "zeta", "alpha")
	v.WithLabelValues("z", `a"b\c`).Inc()
	v.WithLabelValues("z", `a"b\c`).Inc()
	v.WithLabelValues("y", "line\nbreak").Inc()
	h := newHistogramVec("h_seconds", "A histogram.", []float64{0.001, 0.01}, "ep")
	for _, x := range []float64{0.0005, 0.001, 0.005, 3} {
		h.WithLabelValues("imds").Observe(x)
	}
	g := &gauge{name: "g", help: "A gauge."}
	g.Inc()
	g.Inc()
	g.Dec()
	var b strings.Builder
	w := bufio.NewWriter(&b)
	v.write(w)
	h.write(w)
	g.write(w)
	w.Flush()
	want := `# HELP c_total A counter.
# TYPE c_total counter
c_total{alpha="line\nbreak",zeta="y"} 1
c_total{alpha="a\"b\\c",zeta="z"} 2
# HELP h_seconds A histogram.
# TYPE h_seconds histogram
h_seconds_bucket{ep="imds",le="0.001"} 2
h_seconds_bucket{ep="imds",le="0.01"} 3
h_seconds_bucket{ep="imds",le="+Inf"} 4
h_seconds_sum{ep="imds"} 3.0065
h_seconds_count{ep="imds"} 4
# HELP g A gauge.
# TYPE g gauge
g 1
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("exposition (-want +got):\n%s", diff)
	}
}

func TestMetricsRuntimeSeries(t *testing.T) {
	s := &Server{metrics: newMetrics()}
	out := scrape(t, s)
	for _, name := range []string{"go_goroutines ", "go_memstats_heap_alloc_bytes ", "process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "} {
		if !strings.Contains(out, "\n"+name) {
			t.Errorf("no %s series", strings.TrimSpace(name))
		}
	}
}
