package proxy

import (
	"bufio"
	"math"
	"net/http"
	"os"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// metrics are the proxy's series in the Prometheus text format. They are
// written here rather than with client_golang, which adds about 3 MB to a
// stripped agent that must stay under 10 MB; the handful of counters, one
// histogram and a few gauges need nothing more. Each Server has its own
// set, so two servers in one process (tests, embedding) never collide.
type metrics struct {
	requests  *counterVec
	latency   *histogramVec
	upstream  *counterVec
	epoch     *gauge
	conns     *gauge
	refused   *counter
	panics    *counter
	handler   http.Handler
	statusStr [600]string
}

func newMetrics() *metrics {
	m := &metrics{
		requests: newCounterVec("gpa_proxy_requests_total",
			"Requests handled, by host endpoint, authorization decision and response status code.",
			"endpoint", "decision", "code"),
		latency: newHistogramVec("gpa_proxy_request_duration_seconds",
			"Time from reading a request head to the end of its response, by host endpoint.",
			[]float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10},
			"endpoint"),
		upstream: newCounterVec("gpa_proxy_upstream_errors_total",
			"Failures talking to a host endpoint, by endpoint and kind (dial, timeout, send, response).",
			"endpoint", "kind"),
		epoch:   &gauge{name: "gpa_proxy_key_epoch", help: "Epoch of the latch snapshot the last request was handled under."},
		conns:   &gauge{name: "gpa_proxy_open_connections", help: "Client connections currently open."},
		refused: &counter{name: "gpa_proxy_refused_connections_total", help: "Client connections refused because the connection limit was reached."},
		panics:  &counter{name: "gpa_proxy_connection_panics_total", help: "Client connections that ended in a recovered panic."},
	}
	m.handler = http.HandlerFunc(m.serve)
	for i := range m.statusStr {
		m.statusStr[i] = strconv.Itoa(i)
	}
	return m
}

func (m *metrics) code(c int) string {
	if c >= 0 && c < len(m.statusStr) {
		return m.statusStr[c]
	}
	return strconv.Itoa(c)
}

func (m *metrics) serve(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	m.requests.write(bw)
	m.latency.write(bw)
	m.upstream.write(bw)
	m.epoch.write(bw)
	m.conns.write(bw)
	m.refused.write(bw)
	m.panics.write(bw)
	writeRuntime(bw)
	bw.Flush()
}

func writeMetricHeader(w *bufio.Writer, name, help, kind string) {
	w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + kind + "\n")
}

func writeSample(w *bufio.Writer, name, labels string, v float64) {
	w.WriteString(name)
	w.WriteString(labels)
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// labelString renders {a="x",b="y"} with names sorted, as scrapers expect
// a stable order, and values escaped per the text format.
func labelString(names, values []string, extra ...string) string {
	type pair struct{ n, v string }
	ps := make([]pair, 0, len(names)+len(extra)/2)
	for i, n := range names {
		ps = append(ps, pair{n, values[i]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		ps = append(ps, pair{extra[i], extra[i+1]})
	}
	if len(ps) == 0 {
		return ""
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.n, b.n) })
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.n + `="` + labelEscaper.Replace(p.v) + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// counter is a monotonically increasing count.
type counter struct {
	name, help string
	n          atomic.Uint64
}

// Inc adds one.
func (c *counter) Inc() { c.n.Add(1) }

func (c *counter) write(w *bufio.Writer) {
	writeMetricHeader(w, c.name, c.help, "counter")
	writeSample(w, c.name, "", float64(c.n.Load()))
}

// gauge is a value that goes up and down.
type gauge struct {
	name, help string
	bits       atomic.Uint64
}

// Set stores v.
func (g *gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

func (g *gauge) add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Inc adds one, Dec subtracts one.
func (g *gauge) Inc() { g.add(1) }
func (g *gauge) Dec() { g.add(-1) }

func (g *gauge) write(w *bufio.Writer) {
	writeMetricHeader(w, g.name, g.help, "gauge")
	writeSample(w, g.name, "", math.Float64frombits(g.bits.Load()))
}

// vec holds one child per label-value combination, created on first use.
type vec[T any] struct {
	name, help string
	labels     []string
	mu         sync.RWMutex
	children   map[string]*T
	values     map[string][]string
	newChild   func() *T
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != len(v.labels) {
		panic("proxy metrics: " + v.name + ": wrong number of label values")
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	c, ok := v.children[key]
	v.mu.RUnlock()
	if ok {
		return c
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.children[key]; ok {
		return c
	}
	c = v.newChild()
	v.children[key] = c
	v.values[key] = slices.Clone(values)
	return c
}

// each calls f for every child, in a stable order.
func (v *vec[T]) each(f func(labels []string, c *T)) {
	v.mu.RLock()
	keys := make([]string, 0, len(v.children))
	for k := range v.children {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	type kv struct {
		values []string
		c      *T
	}
	items := make([]kv, len(keys))
	for i, k := range keys {
		items[i] = kv{v.values[k], v.children[k]}
	}
	v.mu.RUnlock()
	for _, it := range items {
		f(it.values, it.c)
	}
}

// counterVec is a counter per label-value combination.
type counterVec struct{ vec[atomic.Uint64] }

func newCounterVec(name, help string, labels ...string) *counterVec {
	return &counterVec{vec[atomic.Uint64]{name: name, help: help, labels: labels,
		children: map[string]*atomic.Uint64{}, values: map[string][]string{}, newChild: func() *atomic.Uint64 { return new(atomic.Uint64) }}}
}

// countChild is what WithLabelValues returns.
type countChild struct{ n *atomic.Uint64 }

// Inc adds one.
func (c countChild) Inc() { c.n.Add(1) }

// WithLabelValues returns the counter for values, in label order.
func (v *counterVec) WithLabelValues(values ...string) countChild {
	return countChild{v.with(values)}
}

func (v *counterVec) write(w *bufio.Writer) {
	writeMetricHeader(w, v.name, v.help, "counter")
	v.each(func(values []string, n *atomic.Uint64) {
		writeSample(w, v.name, labelString(v.labels, values), float64(n.Load()))
	})
}

// histogramVec is a histogram per label-value combination.
type histogramVec struct {
	vec[histogram]
	buckets []float64
}

type histogram struct {
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	count  uint64
}

func newHistogramVec(name, help string, buckets []float64, labels ...string) *histogramVec {
	h := &histogramVec{buckets: buckets}
	h.vec = vec[histogram]{name: name, help: help, labels: labels, children: map[string]*histogram{}, values: map[string][]string{},
		newChild: func() *histogram { return &histogram{counts: make([]uint64, len(buckets)+1)} }}
	return h
}

// histChild is what WithLabelValues returns.
type histChild struct {
	h       *histogram
	buckets []float64
}

// Observe records v.
func (c histChild) Observe(v float64) {
	i, _ := slices.BinarySearch(c.buckets, v) // first bucket with upper bound ≥ v
	c.h.mu.Lock()
	c.h.counts[i]++
	c.h.sum += v
	c.h.count++
	c.h.mu.Unlock()
}

// WithLabelValues returns the histogram for values, in label order.
func (v *histogramVec) WithLabelValues(values ...string) histChild {
	return histChild{v.with(values), v.buckets}
}

func (v *histogramVec) write(w *bufio.Writer) {
	writeMetricHeader(w, v.name, v.help, "histogram")
	v.each(func(values []string, h *histogram) {
		h.mu.Lock()
		counts := slices.Clone(h.counts)
		sum, count := h.sum, h.count
		h.mu.Unlock()
		var cum uint64
		for i, c := range counts {
			cum += c
			le := "+Inf"
			if i < len(v.buckets) {
				le = formatFloat(v.buckets[i])
			}
			writeSample(w, v.name+"_bucket", labelString(v.labels, values, "le", le), float64(cum))
		}
		labels := labelString(v.labels, values)
		writeSample(w, v.name+"_sum", labels, sum)
		writeSample(w, v.name+"_count", labels, float64(count))
	})
}

// writeRuntime adds the process series operators look at first: goroutines,
// heap, resident memory, CPU time and open descriptors.
func writeRuntime(w *bufio.Writer) {
	samples := []rtmetrics.Sample{{Name: "/sched/goroutines:goroutines"}, {Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(samples)
	for i, s := range []struct{ name, help string }{
		{"go_goroutines", "Number of goroutines that currently exist."},
		{"go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use."},
	} {
		if samples[i].Value.Kind() == rtmetrics.KindUint64 {
			writeMetricHeader(w, s.name, s.help, "gauge")
			writeSample(w, s.name, "", float64(samples[i].Value.Uint64()))
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
		writeMetricHeader(w, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter")
		writeSample(w, "process_cpu_seconds_total", "", cpu)
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				writeMetricHeader(w, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge")
				writeSample(w, "process_resident_memory_bytes", "", float64(pages*uint64(os.Getpagesize())))
			}
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		writeMetricHeader(w, "process_open_fds", "Number of open file descriptors.", "gauge")
		writeSample(w, "process_open_fds", "", float64(len(ents)))
	}
}
