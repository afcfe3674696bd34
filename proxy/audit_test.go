package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// TestRotatingFile: the log rotates before a write would take it past the
// limit, keeps at most MaxFiles files, and never splits a line.
func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ProxyAgent.Connection.log")
	rf, err := OpenRotatingFile(path, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				rec := &Record{Method: "GET", URL: "/x", UserName: "u", ResponseStatus: "200 OK", ElapsedTime: int64(w*100 + i)}
				if err := writeRecord(rf, rec); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := rf.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("%d files, want 3", len(ents))
	}
	for _, e := range ents {
		if e.Name() != "ProxyAgent.Connection.log" && !strings.HasPrefix(e.Name(), "ProxyAgent.Connection.log.") {
			t.Errorf("unexpected file %s", e.Name())
		}
		st, _ := e.Info()
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the limit", e.Name(), st.Size())
		}
		if st.Mode().Perm() != 0o640 {
			t.Errorf("%s mode %v, want 0640", e.Name(), st.Mode().Perm())
		}
		f, _ := os.Open(filepath.Join(dir, e.Name()))
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("%s: torn line %q", e.Name(), sc.Text())
			}
		}
		f.Close()
	}
	if _, err := rf.Write([]byte("x")); err == nil {
		t.Errorf("Write after Close succeeded")
	}
}

// TestSummaries: 15-minute buckets, 4-hour retention, failed authorizations
// counted separately.
func TestSummaries(t *testing.T) {
	now := time.Date(2025, 4, 23, 12, 0, 0, 0, time.UTC)
	s := &Summaries{Now: func() time.Time { return now }}
	ok := &Record{UserName: "alice", UserGroups: []string{"alice"}, ClientIP: "127.0.0.1", IP: "169.254.169.254", Port: 80,
		ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl x", ResponseStatus: "200 OK", StatusCode: 200, Decision: "allow"}
	denied := *ok
	denied.ResponseStatus, denied.StatusCode, denied.Decision = "403 Forbidden", 403, "deny"
	audited := *ok
	audited.Decision = "audit"

	s.Add(ok)
	s.Add(ok)
	s.Add(&denied)
	now = now.Add(3 * time.Hour)
	s.Add(ok)
	s.Add(&audited)

	row := func(status string, n uint64) ConnectionSummary {
		return ConnectionSummary{UserName: "alice", IP: "169.254.169.254", Port: 80, ProcessCmdLine: "curl x",
			ResponseStatus: status, Count: n, UserGroups: []string{"alice"}, ProcessFullPath: "/usr/bin/curl"}
	}
	conns, failed := s.Snapshot()
	if diff := cmp.Diff([]ConnectionSummary{row("200 OK", 4), row("403 Forbidden", 1)}, conns); diff != "" {
		t.Errorf("connections (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]ConnectionSummary{row("200 OK", 1), row("403 Forbidden", 1)}, failed); diff != "" {
		t.Errorf("failed (-want +got):\n%s", diff)
	}
	// An hour and a bit later the first bucket is older than 4 hours.
	now = now.Add(75 * time.Minute)
	conns, failed = s.Snapshot()
	if diff := cmp.Diff([]ConnectionSummary{row("200 OK", 2)}, conns); diff != "" {
		t.Errorf("connections after expiry (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]ConnectionSummary{row("200 OK", 1)}, failed); diff != "" {
		t.Errorf("failed after expiry (-want +got):\n%s", diff)
	}
	// Without anyone reading, expired entries still go as time moves on.
	now = now.Add(5 * time.Hour)
	s.Add(&denied)
	s.mu.Lock()
	if len(s.all) != 1 || len(s.failed) != 1 {
		t.Errorf("after 5 idle hours %d/%d entries kept, want 1/1", len(s.all), len(s.failed))
	}
	s.mu.Unlock()
	b, _ := json.Marshal(conns[0])
	if want := `{"userName":"alice","ip":"169.254.169.254","port":80,"processCmdLine":"curl x","responseStatus":"200 OK","count":2,"userGroups":["alice"],"processFullPath":"/usr/bin/curl"}`; string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
}

// TestSummariesFromProxy: the proxy feeds its SummarySink once per request,
// and no audit output carries key material.
func TestSummariesFromProxy(t *testing.T) {
	key := testKey(t, 8)
	host := newFakeHost(t)
	host.addKey(key)
	sums := &Summaries{}
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr), tweak: func(c *Config) { c.Summaries = sums }})
	tp.snap.Store(snapshotFor(t, 1, denyTokenRules(), &key))
	tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.raw(t, "GET /metadata/identity HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	tp.waitRecords(t, 2)
	conns, failed := sums.Snapshot()
	if len(conns) != 2 || len(failed) != 1 || failed[0].ResponseStatus != "403 Forbidden" {
		t.Errorf("connections %+v\nfailed %+v", conns, failed)
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
