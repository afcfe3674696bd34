package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram()
	// 1..1000 µs, one sample each.
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(tt.q)
		// Buckets are 1/64 of a power of two wide.
		if diff := got - tt.want; diff < -tt.want/64 || diff > tt.want/64 {
			t.Errorf("quantile(%v) = %v, want %v ± 1.6%%", tt.q, got, tt.want)
		}
	}
	if got := newHistogram().quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %v", got)
	}
}

func TestHistogramBucketsRoundTrip(t *testing.T) {
	for _, ns := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456, 1 << 40, 1<<62 + 12345} {
		i := bucketOf(ns)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", ns, i)
		}
		mid := bucketMid(i)
		if bucketOf(mid) != i {
			t.Errorf("bucketMid(%d) = %d is not in bucket %d", i, mid, i)
		}
		if d := int64(mid) - int64(ns); d < 0 && -d > int64(ns/64)+1 || d > 0 && d > int64(ns/64)+1 {
			t.Errorf("ns %d -> bucket %d mid %d: error over 1/64", ns, i, mid)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	a, b := newHistogram(), newHistogram()
	a.add(time.Millisecond)
	b.add(3 * time.Millisecond)
	b.add(5 * time.Millisecond)
	a.merge(b)
	if a.Total != 3 || a.Max != int64(5*time.Millisecond) {
		t.Fatalf("merged total %d max %v", a.Total, time.Duration(a.Max))
	}
	if got := a.quantile(0.5); got < 2900*time.Microsecond || got > 3100*time.Microsecond {
		t.Errorf("median after merge = %v", got)
	}
}

func TestParseProc(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	stat := "4242 (a) b c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0\n"
	cpu, err := parseProcStatCPU([]byte(stat))
	if err != nil || cpu != 3*time.Second {
		t.Errorf("cpu = %v, %v; want 3s", cpu, err)
	}
	if _, err := parseProcStatCPU([]byte("4242 (x) S 1")); !errors.Is(err, errProcFormat) {
		t.Errorf("short stat: err = %v", err)
	}
	rss, err := parseVmRSS([]byte("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   13312 kB\nThreads: 4\n"))
	if err != nil || rss != 13312<<10 {
		t.Errorf("rss = %d, %v", rss, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); !errors.Is(err, errProcFormat) {
		t.Errorf("no VmRSS: err = %v", err)
	}
}

func TestLoadSpecValidate(t *testing.T) {
	ok := loadSpec{Mode: "http", Addr: "127.0.0.1:1", Clients: 1, Count: 1}
	for _, tt := range []struct {
		name string
		edit func(*loadSpec)
	}{
		{"mode", func(s *loadSpec) { s.Mode = "udp" }},
		{"clients", func(s *loadSpec) { s.Clients = 0 }},
		{"too many clients", func(s *loadSpec) { s.Clients = 5000 }},
		{"unbounded", func(s *loadSpec) { s.Count = 0 }},
		{"too long", func(s *loadSpec) { s.Duration = time.Hour }},
		{"addr", func(s *loadSpec) { s.Addr = "nowhere" }},
	} {
		s := ok
		tt.edit(&s)
		if err := s.validate(); !errors.Is(err, errBadSpec) {
			t.Errorf("%s: err = %v, want errBadSpec", tt.name, err)
		}
	}
	if err := ok.validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
}

// TestRunLoadKeepAliveAndNewConn checks the generator against net/http: it
// counts what the server answered, reuses connections unless told not to,
// and stops at its count.
func TestRunLoadKeepAliveAndNewConn(t *testing.T) {
	var conns, reqs atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		if r.Header.Get("Metadata") != "true" || r.Host != "169.254.169.254" || r.RequestURI != "/metadata/instance?x=1" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	for _, tt := range []struct {
		newConn   bool
		wantConns int64
	}{{false, 4}, {true, 200}} {
		conns.Store(0)
		reqs.Store(0)
		res, err := runLoad(context.Background(), &loadSpec{Mode: "http", Addr: addr, Host: "169.254.169.254",
			Path: "/metadata/instance?x=1", Clients: 4, Count: 200, NewConn: tt.newConn, Duration: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		got := struct{ Requests, Errors, NonOK, Samples, Served, Conns int64 }{res.Requests, res.Errors, res.NonOK, res.Latencies.Total, reqs.Load(), conns.Load()}
		want := struct{ Requests, Errors, NonOK, Samples, Served, Conns int64 }{200, 0, 0, 200, 200, tt.wantConns}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("newConn=%v (-want +got):\n%s", tt.newConn, diff)
		}
	}
}

// serveLoopback serves each connection to a loopback listener with
// handle, which gets the connection's number from 0. When the test ends it
// closes the listener and every connection and waits for the handlers.
func serveLoopback(t *testing.T, handle func(c net.Conn, n int)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, n)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRunLoadCountsErrorsAndStatus(t *testing.T) {
	// Answers 404 on the first connection, then garbage.
	addr := serveLoopback(t, func(c net.Conn, i int) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line != "\r\n" {
				continue
			}
			if i == 0 {
				fmt.Fprint(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
				continue
			}
			fmt.Fprint(c, "garbage\r\n\r\n")
			return
		}
	})
	res, err := runLoad(context.Background(), &loadSpec{Mode: "http", Addr: addr, Host: "h", Path: "/",
		Clients: 1, Count: 3, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := []int64{res.Requests, res.NonOK, res.Errors}
	if diff := cmp.Diff([]int64{3, 3, 0}, got); diff != "" {
		t.Errorf("keep-alive 404s: requests, nonOK, errors (-want +got):\n%s", diff)
	}
	res, err = runLoad(context.Background(), &loadSpec{Mode: "http", Addr: addr, Host: "h", Path: "/",
		Clients: 1, Count: 2, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 2 || !strings.Contains(res.FirstErr, errMalformed.Error()) {
		t.Errorf("garbage: errors %d first %q", res.Errors, res.FirstErr)
	}
}

func TestRunLoadConnect(t *testing.T) {
	var accepted atomic.Int64
	addr := serveLoopback(t, func(net.Conn, int) { accepted.Add(1) })
	res, err := runLoad(context.Background(), &loadSpec{Mode: "connect", Addr: addr, Clients: 2, Count: 50, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 50 || res.Errors != 0 {
		t.Errorf("connects %d errors %d (%s)", res.Requests, res.Errors, res.FirstErr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for accepted.Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if accepted.Load() != 50 {
		t.Errorf("listener accepted %d, want 50", accepted.Load())
	}
}

func cellOf(target string, m cellMode, rate float64, p99 time.Duration) *cellResult {
	h := newHistogram()
	for i := 0; i < 100; i++ {
		h.add(p99)
	}
	return &cellResult{target: target, mode: m, load: &loadResult{Requests: int64(rate), Elapsed: time.Second, Latencies: h}}
}

func TestGoals(t *testing.T) {
	one := cellMode{1, false}
	agent, relay := cellOf(targetAgent, one, 900, 400*time.Microsecond), cellOf(targetRelay, one, 1000, 200*time.Microsecond)
	agent.proxyCPU, relay.proxyCPU = 45*time.Millisecond, 40*time.Millisecond // 50 and 40 µs per request
	r := &results{
		cells: []*cellResult{
			cellOf(targetDirect, one, 1000, 100*time.Microsecond),
			agent,
			cellOf(targetNginx, one, 800, 200*time.Microsecond),
			relay,
		},
		rssIdle: 10 << 20, rssWarm: 20 << 20, rssSoak: 23 << 20, soakRequests: 1000,
		startups:       []time.Duration{20 * time.Millisecond, 160 * time.Millisecond},
		connectWithCPU: 98, connectWithoutCPU: 100_000, bpfPerConnect: 200 * time.Nanosecond, binarySize: 11 << 20,
	}
	var got []string
	for _, g := range r.goals() {
		got = append(got, fmt.Sprintf("%s | %v", strings.SplitN(g.name, ",", 2)[0], g.ok))
	}
	want := []string{
		"agent CPU per request against go relay's | true", // 1.25×
		"throughput against nginx | true",
		"p50 added over direct | false", // 300 µs added against nginx's 100
		"p99 added over direct | false", // 300 µs added
		"agent RSS idle | true",
		"RSS growth over 1000 requests | false", // +15 %
		"soak requests failed or not 200 | true",
		"IMDS requests through the agent reaching the host without a valid signature | true",
		"exec → SUCCESS | false", // worst counts
		"connect() slowdown | true",
		"stripped agent binary | false",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("goals (-want +got):\n%s", diff)
	}

	// Without nginx (-no-nginx) the goals judged against it are left out,
	// and without the relay the CPU goals; the others stay.
	for _, tt := range []struct {
		drop string
		left []string
	}{
		{targetNginx, []string{"agent CPU per request against go relay's"}},
		{targetRelay, []string{"throughput against nginx", "p50 added over direct"}},
	} {
		var kept []*cellResult
		for _, c := range r.cells {
			if c.target != tt.drop {
				kept = append(kept, c)
			}
		}
		var names []string
		for _, g := range (&results{cells: kept}).goals() {
			names = append(names, strings.SplitN(g.name, ",", 2)[0])
		}
		want := append(tt.left, "p99 added over direct", "IMDS requests through the agent reaching the host without a valid signature")
		if diff := cmp.Diff(want, names); diff != "" {
			t.Errorf("without %s (-want +got):\n%s", tt.drop, diff)
		}
	}
}

// TestPoolRounds: a cell's rounds pool into one rate, one CPU per request
// and one latency distribution, as if they were one longer run, not an
// average of rates.
func TestPoolRounds(t *testing.T) {
	one := cellMode{8, false}
	fast, slow := cellOf(targetAgent, one, 3000, 100*time.Microsecond), cellOf(targetAgent, one, 1000, 900*time.Microsecond)
	fast.proxyCPU, slow.proxyCPU = 300*time.Millisecond, 500*time.Millisecond
	fast.maxRSS, slow.maxRSS = 20<<20, 18<<20
	slow.badSigs, slow.load.Errors, slow.load.FirstErr = 1, 2, "reset"
	fast.pool(slow)
	got := struct {
		Rate, CPUPerTenK float64
		P25, P99, Max    time.Duration
		Samples, Errors  int64
		MaxRSS           int64
		BadSigs          int
		FirstErr         string
	}{fast.load.Rate(), fast.perTenK(fast.proxyCPU),
		fast.load.Latencies.quantile(0.25).Round(10 * time.Microsecond), fast.load.Latencies.quantile(0.99).Round(10 * time.Microsecond),
		time.Duration(fast.load.Latencies.Max), fast.load.Latencies.Total, fast.load.Errors, fast.maxRSS, fast.badSigs, fast.load.FirstErr}
	want := got
	want.Rate, want.CPUPerTenK = 2000, 2 // 4000 requests in 2 s; 0.8 s of CPU for 4000
	want.P25, want.P99, want.Max = 100*time.Microsecond, 900*time.Microsecond, 900*time.Microsecond
	want.Samples, want.Errors, want.MaxRSS, want.BadSigs, want.FirstErr = 200, 2, 20<<20, 1, "reset"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pooled cell (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]float64{3000, 1000}, fast.roundRates()); diff != "" {
		t.Errorf("round rates (-want +got):\n%s", diff)
	}
}

// pooledCell is a cell of target pooled from one round per rate.
func pooledCell(target string, m cellMode, rates ...float64) *cellResult {
	c := cellOf(target, m, rates[0], time.Millisecond)
	for _, r := range rates[1:] {
		c.pool(cellOf(target, m, r, time.Millisecond))
	}
	return c
}

// TestRoundSpread: the throughput goal shows the range of the per-round
// ratios, which pooling alone would hide.
func TestRoundSpread(t *testing.T) {
	m := cellMode{8, false}
	lo, hi, ok := roundSpread(pooledCell(targetAgent, m, 900, 700, 1000), pooledCell(targetNginx, m, 1000, 1000, 800))
	if diff := cmp.Diff([]float64{0.7, 1.25}, []float64{lo, hi}, cmpopts.EquateApprox(0, 1e-12)); diff != "" || !ok {
		t.Errorf("spread ok=%v (-want +got):\n%s", ok, diff)
	}
	if _, _, ok := roundSpread(cellOf(targetAgent, m, 1, 0), cellOf(targetNginx, m, 1, 0)); ok {
		t.Error("a spread for single rounds")
	}
	if _, _, ok := roundSpread(pooledCell(targetAgent, m, 900, 700), pooledCell(targetNginx, m, 1000, 1000, 800)); ok {
		t.Error("a spread for different numbers of rounds")
	}
}

// TestComparisons: the relay against nginx and the agent against the
// relay, pooled with their round-by-round range, for each client count
// that has both rows and no other; then the agent's CPU per request
// against the relay's, where both CPUs were read.
func TestComparisons(t *testing.T) {
	ka, nc := cellMode{8, false}, cellMode{8, true}
	withCPU := func(c *cellResult, cpu time.Duration) *cellResult {
		c.proxyCPU = cpu
		return c
	}
	r := &results{cells: []*cellResult{
		pooledCell(targetNginx, ka, 1000, 1000),
		withCPU(pooledCell(targetRelay, ka, 1100, 1000), 42*time.Millisecond),  // 2100 requests: 20 µs each
		withCPU(pooledCell(targetAgent, ka, 880, 700), 39500*time.Microsecond), // 1580 requests: 25 µs each
		pooledCell(targetRelay, nc, 500, 500),                                  // no nginx row: no relay / nginx line; no CPU: no CPU line
		withCPU(pooledCell(targetAgent, nc, 400, 300), 70*time.Millisecond),
	}}
	var got []string
	for _, c := range r.comparisons() {
		got = append(got, c.name+" | "+c.clients+" | "+c.ratio)
	}
	want := []string{
		"go relay / nginx, req/s | 8 keep-alive | 105 % (by round 100 to 110 %)",
		"agent / go relay, req/s | 8 keep-alive | 75 % (by round 70 to 80 %)",
		"agent / go relay, req/s | 8, new conn | 70 % (by round 60 to 80 %)",
		"agent / go relay, proxy CPU per request | 8 keep-alive | 1.25× (25.0 / 20.0 µs)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("comparisons (-want +got):\n%s", diff)
	}
}

func TestSpliceReadme(t *testing.T) {
	doc := "# x\n\nbefore\n" + readmeBegin + "\nold table\n" + readmeEnd + "\nafter\n"
	out, err := spliceReadme([]byte(doc), "new table\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# x\n\nbefore\n" + readmeBegin + "\nnew table\n" + readmeEnd + "\nafter\n"
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := spliceReadme([]byte("no markers"), "x"); !errors.Is(err, errNoMarkers) {
		t.Errorf("err = %v, want errNoMarkers", err)
	}
}

func TestReplaceFlag(t *testing.T) {
	for _, tt := range []struct{ in, want []string }{
		{nil, []string{"-readme=/abs"}},
		{[]string{"-readme", "r.md", "-soak", "5"}, []string{"-soak", "5", "-readme=/abs"}},
		{[]string{"--readme=r.md", "-no-nginx"}, []string{"-no-nginx", "-readme=/abs"}},
	} {
		if diff := cmp.Diff(tt.want, replaceFlag(tt.in, "readme", "/abs")); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseFlagsBounds(t *testing.T) {
	for _, args := range [][]string{{"-duration", "1h"}, {"-soak", "-1"}, {"-soak", "99999999"}, {"-startups", "0"}, {"-rounds", "0"}, {"-rounds", "11"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	o, err := parseFlags(nil, io.Discard)
	if err != nil || o.duration != 3*time.Second || o.rounds != 3 || o.soak != 1_000_000 || !o.fastIMDS {
		t.Errorf("defaults: %+v %v", o, err)
	}
}

// Example_spliceReadme shows how a run's tables replace the previous ones
// in the README, between the markers and nowhere else.
func Example_spliceReadme() {
	doc := "## Performance\n" + readmeBegin + "\n(old tables)\n" + readmeEnd + "\nNotes stay.\n"
	out, _ := spliceReadme([]byte(doc), "| target | req/s |\n")
	fmt.Print(string(out))
	// Output:
	// ## Performance
	// <!-- gpa-bench:begin -->
	// | target | req/s |
	// <!-- gpa-bench:end -->
	// Notes stay.
}
