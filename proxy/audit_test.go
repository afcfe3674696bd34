package proxy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// recordingSink keeps a copy of every record its Add sees.
type recordingSink struct {
	mu   sync.Mutex
	recs []msp.AuditRecord
}

func (s *recordingSink) Add(r *msp.AuditRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *r
	c.UserGroups = slices.Clone(r.UserGroups)
	s.recs = append(s.recs, c)
}

// TestSummariesFromProxy: the proxy feeds its SummarySink once per request,
// with the status the client got, and no audit output carries key
// material.
func TestSummariesFromProxy(t *testing.T) {
	key := testKey(t, 8)
	host := newFakeHost(t)
	host.addKey(key)
	sink := &recordingSink{}
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr), tweak: func(c *Config) { c.Summaries = sink }})
	tp.snap.Store(snapshotFor(t, 1, denyTokenRules(), &key))
	tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.raw(t, "GET /metadata/identity HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.waitRecords(t, 2)
	sink.mu.Lock()
	type seen struct {
		URL, ResponseStatus, IP string
		Failed                  bool
	}
	var got []seen
	for _, r := range sink.recs {
		got = append(got, seen{r.URL, r.ResponseStatus, r.IP, r.FailedAuthorization()})
	}
	sink.mu.Unlock()
	want := []seen{
		{"/metadata/instance", "200 OK", "169.254.169.254", false},
		{"/metadata/identity", "403 Forbidden", "169.254.169.254", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records the sink saw (-want +got):\n%s", diff)
	}
	tp.log.mu.Lock()
	defer tp.log.mu.Unlock()
	for _, l := range tp.log.lines {
		secret := fmt.Sprintf("%x", 8+0x1234567)
		if strings.Contains(strings.ToLower(string(l)), secret) || strings.Contains(strings.ToLower(string(l)), "hmac") {
			t.Errorf("audit line carries key material: %s", l)
		}
	}
}
