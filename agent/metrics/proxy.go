package metrics

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/metadatasec/gpa/msp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Proxy records the proxy's measurements as Prometheus series named
// gpa_proxy_*. It implements proxy.Metrics.
type Proxy struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	upstream *prometheus.CounterVec
	epoch    prometheus.Gauge
	conns    prometheus.Gauge
	refused  prometheus.Counter
	panics   prometheus.Counter
	// codes holds the status codes as label values, so a request does not
	// format one.
	codes [600]string
	// counted holds the requests_total children of the label values a
	// proxy uses, and timed the request_duration_seconds ones, resolved
	// on first use: WithLabelValues hashes the values and takes a lock,
	// twice per request.
	counted [len(endpointLabels)][len(decisionLabels)]atomic.Pointer[[600]atomic.Pointer[prometheus.Counter]]
	timed   [len(endpointLabels)]atomic.Pointer[prometheus.Observer]
}

// The label values RequestDone resolves once; others go through
// WithLabelValues every time.
var (
	endpointLabels = [...]string{msp.EndpointWireServer.String(), msp.EndpointIMDS.String(), msp.EndpointHostGA.String(), msp.EndpointNone.String()}
	decisionLabels = [...]string{msp.VerdictAllow.String(), msp.VerdictAllowAudited.String(), msp.VerdictDeny.String(), ""}
)

func labelIndex(values []string, v string) int {
	for i, s := range values {
		if s == v {
			return i
		}
	}
	return -1
}

// NewProxy creates the proxy's series and registers them on reg. It fails
// when reg already has series of these names (a second proxy on one
// registry): give each its own prometheus.WrapRegistererWithPrefix.
func NewProxy(reg prometheus.Registerer) (*Proxy, error) {
	m := &Proxy{}
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
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.upstream, m.epoch, m.conns, m.refused, m.panics} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for i := range m.codes {
		m.codes[i] = strconv.Itoa(i)
	}
	return m, nil
}

func (m *Proxy) code(c int) string {
	if c >= 0 && c < len(m.codes) {
		return m.codes[c]
	}
	return strconv.Itoa(c)
}

// RequestDone implements proxy.Metrics.
func (m *Proxy) RequestDone(endpoint, decision string, code int, elapsed time.Duration) {
	e, d := labelIndex(endpointLabels[:], endpoint), labelIndex(decisionLabels[:], decision)
	if e < 0 || d < 0 || code < 0 || code >= len(m.codes) {
		m.requests.WithLabelValues(endpoint, decision, m.code(code)).Inc()
		m.latency.WithLabelValues(endpoint).Observe(elapsed.Seconds())
		return
	}
	m.counter(e, d, code).Inc()
	o := m.timed[e].Load()
	if o == nil {
		ob := m.latency.WithLabelValues(endpointLabels[e])
		m.timed[e].Store(&ob)
		o = &ob
	}
	(*o).Observe(elapsed.Seconds())
}

// counter returns the requests_total child of endpointLabels[e],
// decisionLabels[d] and code, resolving it on first use. Two requests may
// both resolve it; WithLabelValues gives them the same child.
func (m *Proxy) counter(e, d, code int) prometheus.Counter {
	codes := m.counted[e][d].Load()
	if codes == nil {
		m.counted[e][d].CompareAndSwap(nil, new([600]atomic.Pointer[prometheus.Counter]))
		codes = m.counted[e][d].Load()
	}
	if c := codes[code].Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(endpointLabels[e], decisionLabels[d], m.codes[code])
	codes[code].Store(&c)
	return c
}

// UpstreamError implements proxy.Metrics.
func (m *Proxy) UpstreamError(ep msp.Endpoint, kind string) {
	m.upstream.WithLabelValues(ep.String(), kind).Inc()
}

// Epoch implements proxy.Metrics.
func (m *Proxy) Epoch(epoch uint64) { m.epoch.Set(float64(epoch)) }

// ConnOpened implements proxy.Metrics.
func (m *Proxy) ConnOpened() { m.conns.Inc() }

// ConnClosed implements proxy.Metrics.
func (m *Proxy) ConnClosed() { m.conns.Dec() }

// ConnRefused implements proxy.Metrics.
func (m *Proxy) ConnRefused() { m.refused.Inc() }

// Panic implements proxy.Metrics.
func (m *Proxy) Panic() { m.panics.Inc() }

// NewRegistry returns a registry with the Go runtime and process
// collectors, what the agent serves at /metrics besides the proxy's series.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
