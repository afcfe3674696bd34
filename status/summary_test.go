package status

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummaryBucketsAndRetention(t *testing.T) {
	a := NewSummaryAggregator(&SummaryOptions{})
	t0 := time.Date(2025, 4, 23, 12, 0, 0, 0, time.UTC) // a bucket boundary
	c := Connection{UserName: "root", UserGroups: []string{"root"}, IP: "169.254.169.254", Port: 80,
		ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl x", ResponseStatus: "200 OK"}

	steps := []struct {
		at        time.Duration
		newBucket bool
	}{
		{0, true},
		{time.Minute, false},
		{14*time.Minute + 59*time.Second, false},
		{15 * time.Minute, true},
		{2 * time.Hour, true},
	}
	for _, s := range steps {
		if got := a.Record(t0.Add(s.at), c); got != s.newBucket {
			t.Errorf("Record at +%v: newBucket = %v, want %v", s.at, got, s.newBucket)
		}
	}
	count := func(at time.Duration) uint64 {
		snap := a.Snapshot(t0.Add(at))
		if len(snap) == 0 {
			return 0
		}
		return snap[0].Count
	}
	// 4 h keeps 16 buckets: the one that started at t0 is gone once the
	// bucket 16 widths later begins.
	tests := []struct {
		at   time.Duration
		want uint64
	}{
		{2 * time.Hour, 5},
		{3*time.Hour + 59*time.Minute, 5},
		{4 * time.Hour, 2}, // t0's bucket (3 requests) dropped
		{4*time.Hour + 15*time.Minute, 1},
		{6*time.Hour + 15*time.Minute, 0}, // entry removed with its last bucket
	}
	for _, tt := range tests {
		if got := count(tt.at); got != tt.want {
			t.Errorf("count at +%v = %d, want %d", tt.at, got, tt.want)
		}
	}
	if n := len(a.Snapshot(t0.Add(7 * time.Hour))); n != 0 {
		t.Errorf("%d entries left after all buckets expired", n)
	}
}

func TestSummaryGroupingAndOrder(t *testing.T) {
	a := NewSummaryAggregator(&SummaryOptions{})
	now := time.Now()
	base := Connection{UserName: "root", UserGroups: []string{"root"}, IP: "168.63.129.16", Port: 80,
		ProcessFullPath: "/usr/bin/python3", ProcessCmdLine: "waagent", ResponseStatus: "200 OK"}
	vary := []func(*Connection){
		func(*Connection) {},
		func(c *Connection) { c.ResponseStatus = "403 Forbidden" },
		func(c *Connection) { c.Port = 32526 },
		func(c *Connection) { c.ClientIP = "127.0.0.2" }, // grouped apart, merged in output order
		func(c *Connection) { c.UserName, c.UserGroups = "alice", []string{"alice"} },
		func(c *Connection) { c.UserGroups = []string{"other"} }, // groups do not split an entry
	}
	for _, v := range vary {
		c := base
		v(&c)
		a.Record(now, c)
	}
	row := func(user string, port uint16, status string, count uint64, groups ...string) ConnectionSummary {
		return ConnectionSummary{UserName: user, IP: "168.63.129.16", Port: port, ProcessCmdLine: "waagent",
			ResponseStatus: status, Count: count, UserGroups: groups, ProcessFullPath: "/usr/bin/python3"}
	}
	want := []ConnectionSummary{
		row("alice", 80, "200 OK", 1, "alice"),
		row("root", 80, "200 OK", 2, "root"),
		row("root", 80, "200 OK", 1, "root"),
		row("root", 80, "403 Forbidden", 1, "root"),
		row("root", 32526, "200 OK", 1, "root"),
	}
	if diff := cmp.Diff(want, a.Snapshot(now)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestSummaryMaxEntries(t *testing.T) {
	a := NewSummaryAggregator(&SummaryOptions{MaxEntries: 2})
	now := time.Now()
	for _, cmd := range []string{"a", "b", "c", "a", "d"} {
		a.Record(now, Connection{ProcessCmdLine: cmd})
	}
	got := a.Snapshot(now)
	if len(got) != 2 || got[0].Count != 2 || got[1].Count != 1 || a.Dropped() != 2 {
		t.Errorf("snapshot %+v, dropped %d; want a=2, b=1, dropped 2", got, a.Dropped())
	}
	// Once old entries expire, new callers are counted again.
	later := now.Add(5 * time.Hour)
	a.Record(later, Connection{ProcessCmdLine: "e"})
	if got := a.Snapshot(later); len(got) != 1 || got[0].ProcessCmdLine != "e" {
		t.Errorf("after expiry: %+v", got)
	}
}

func TestSummaryClockStepBack(t *testing.T) {
	a := NewSummaryAggregator(&SummaryOptions{})
	now := time.Now()
	a.Record(now, Connection{})
	a.Record(now.Add(-time.Hour), Connection{})
	if got := a.Snapshot(now); len(got) != 1 || got[0].Count != 2 {
		t.Errorf("snapshot = %+v, want one row counting 2", got)
	}
}
