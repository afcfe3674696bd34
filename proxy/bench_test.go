package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

const benchRequest = "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nUser-Agent: bench\r\n\r\n"

// roundTripper sends benchRequest to addr over a kept connection, or a new
// one per request.
type roundTripper struct {
	addr    string
	newConn bool
	c       net.Conn
	br      *bufio.Reader
}

func (r *roundTripper) do(b *testing.B) {
	if r.c == nil || r.newConn {
		if r.c != nil {
			r.c.Close()
		}
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			b.Fatal(err)
		}
		r.c, r.br = c, bufio.NewReader(c)
	}
	if _, err := io.WriteString(r.c, benchRequest); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

func (r *roundTripper) close() {
	if r.c != nil {
		r.c.Close()
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkAddedLatency measures a signed, authorized IMDS request through
// the proxy against the same request sent to the host directly, alternating
// the two so that drift on a shared machine hits both alike. It reports
// proxied requests per second and the p50/p99 latency the proxy adds.
func BenchmarkAddedLatency(b *testing.B) {
	for _, hostKind := range []string{"fakehost", "msptest"} {
		for _, mode := range []struct {
			name    string
			newConn bool
		}{{"keepalive", false}, {"newconn", true}} {
			b.Run(hostKind+"/"+mode.name, func(b *testing.B) {
				key := testKey(b, 1)
				var hostAddr string
				var tp *testProxy
				if hostKind == "msptest" {
					// IMDS in Audit, so the unsigned direct request is
					// served too; the host verifies every signature.
					h := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
						msp.EndpointIMDS: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "bench"},
					}})
					b.Cleanup(h.Close)
					h.LatchKey(key)
					hostAddr = h.IMDSAddr().String()
					tp = newTestProxy(b, nil, proxyOpts{caller: userCaller(msp.IMDSAddr)})
					tp.setHost(msp.IMDSAddr, hostAddr)
				} else {
					host := newFakeHost(b)
					host.noVerify = true
					hostAddr = host.ln.Addr().String()
					tp = newTestProxy(b, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
				}
				tp.snap.Store(snapshotFor(b, 1, denyTokenRules(), &key))
				direct := &roundTripper{addr: hostAddr, newConn: mode.newConn}
				proxied := &roundTripper{addr: tp.addr, newConn: mode.newConn}
				defer direct.close()
				defer proxied.close()
				for range 50 { // warm pools and caches
					direct.do(b)
					proxied.do(b)
				}
				dd := make([]time.Duration, 0, b.N)
				pd := make([]time.Duration, 0, b.N)
				var proxiedTotal time.Duration
				b.ResetTimer()
				for range b.N {
					t0 := time.Now()
					direct.do(b)
					t1 := time.Now()
					proxied.do(b)
					t2 := time.Now()
					dd = append(dd, t1.Sub(t0))
					pd = append(pd, t2.Sub(t1))
					proxiedTotal += t2.Sub(t1)
				}
				b.StopTimer()
				us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
				b.ReportMetric(float64(b.N)/proxiedTotal.Seconds(), "proxied-req/s")
				b.ReportMetric(us(percentile(dd, 0.5)), "direct-p50-µs")
				b.ReportMetric(us(percentile(pd, 0.5)), "proxied-p50-µs")
				b.ReportMetric(us(percentile(pd, 0.5)-percentile(dd, 0.5)), "added-p50-µs")
				b.ReportMetric(us(percentile(pd, 0.99)-percentile(dd, 0.99)), "added-p99-µs")
			})
		}
	}
}

// benchProxy is a proxy in front of a host that answers without checking
// signatures, so the proxy's work is most of what a benchmark measures.
func benchProxy(b *testing.B) *testProxy {
	key := testKey(b, 1)
	host := newFakeHost(b)
	host.noVerify = true
	tp := newTestProxy(b, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(b, 1, denyTokenRules(), &key))
	return tp
}

// BenchmarkProxyParallel is the proxy's throughput with several keep-alive
// clients at once.
func BenchmarkProxyParallel(b *testing.B) {
	tp := benchProxy(b)
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rt := &roundTripper{addr: tp.addr}
		defer rt.close()
		for pb.Next() {
			rt.do(b)
		}
	})
}

// BenchmarkProxyNewConn is BenchmarkProxyParallel with a new connection
// per request, the cost a caller that does not keep connections alive
// puts on the proxy.
func BenchmarkProxyNewConn(b *testing.B) {
	tp := benchProxy(b)
	const req = "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n"
	b.SetParallelism(2)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := rawExchange(tp.addr, req)
			if err != nil || rawStatus(resp) != 200 {
				b.Errorf("answer %q, %v", resp, err)
				return
			}
		}
	})
}
