package proxy

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/metadatasec/gpa/msp"
)

func scrape(t testing.TB, tp *testProxy) string {
	t.Helper()
	rr := httptest.NewRecorder()
	tp.metrics.ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	return rr.Body.String()
}

// TestMetrics: requests are counted by endpoint, decision and status, with
// latency, upstream errors and the key epoch.
func TestMetrics(t *testing.T) {
	host := newFakeHost(t)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	key := testKey(t, 9)
	host.addKey(key)
	tp.snap.Store(snapshotFor(t, 9, denyTokenRules(), &key))
	tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.raw(t, "GET /metadata/identity HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.srv.pool.closeIdle(false)
	tp.setHost(msp.IMDSAddr, "127.0.0.1:1")
	tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.waitRecords(t, 3)
	out := scrape(t, tp)
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
