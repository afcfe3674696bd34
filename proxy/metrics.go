package proxy

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the proxy's Prometheus series, in a private registry so that
// two servers in one process (tests, embedding) never collide and nothing
// leaks into the global default registry.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	upstream  *prometheus.CounterVec
	epoch     prometheus.Gauge
	conns     prometheus.Gauge
	refused   prometheus.Counter
	panics    prometheus.Counter
	handler   http.Handler
	statusStr [600]string
	// statusLn holds "403 Forbidden" and the like, the audit record's
	// responseStatus, so a request does not build it.
	statusLn [600]string
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "requests_total",
		Help: "Requests handled, by host endpoint, authorization decision and response status code.",
	}, []string{"endpoint", "decision", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "request_duration_seconds",
		Help:    "Time from reading a request head to the end of its response, by host endpoint.",
		Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10},
	}, []string{"endpoint"})
	m.upstream = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "upstream_errors_total",
		Help: "Failures talking to a host endpoint, by endpoint and kind (dial, timeout, send, response).",
	}, []string{"endpoint", "kind"})
	m.epoch = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "key_epoch",
		Help: "Epoch of the latch snapshot the last request was handled under.",
	})
	m.conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "open_connections",
		Help: "Client connections currently open.",
	})
	m.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "refused_connections_total",
		Help: "Client connections refused because the connection limit was reached.",
	})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gpa", Subsystem: "proxy", Name: "connection_panics_total",
		Help: "Client connections that ended in a recovered panic.",
	})
	m.reg.MustRegister(m.requests, m.latency, m.upstream, m.epoch, m.conns, m.refused, m.panics,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	for i := range m.statusStr {
		m.statusStr[i] = strconv.Itoa(i)
		m.statusLn[i] = m.statusStr[i] + " " + http.StatusText(i)
	}
	return m
}

func (m *metrics) code(c int) string {
	if c >= 0 && c < len(m.statusStr) {
		return m.statusStr[c]
	}
	return strconv.Itoa(c)
}

// statusLine returns "code reason" for the audit record.
func (m *metrics) statusLine(c int) string {
	if c >= 0 && c < len(m.statusLn) {
		return m.statusLn[c]
	}
	return strconv.Itoa(c) + " " + http.StatusText(c)
}
