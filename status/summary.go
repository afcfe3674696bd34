package status

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of SummaryOptions.
const (
	DefaultSummaryBucket     = 15 * time.Minute
	DefaultSummaryRetention  = 4 * time.Hour
	DefaultSummaryMaxEntries = 10000
)

// SummaryOptions configures a SummaryAggregator. Zero fields take the
// defaults above.
type SummaryOptions struct {
	// Bucket is the width of one counting bucket.
	Bucket time.Duration
	// Retention is how long a bucket is kept; an entry with no bucket left
	// disappears from the summary.
	Retention time.Duration
	// MaxEntries caps the number of distinct callers kept. Command lines
	// are chosen by local processes, so without a cap any process could grow
	// the agent's memory; requests past the cap are counted in Dropped.
	MaxEntries int
}

// Connection describes one finished request, as the proxy knows it.
type Connection struct {
	UserName   string
	UserGroups []string
	// ClientIP groups the summary but is not written: upstream's file has
	// no such field.
	ClientIP        string
	IP              string // original destination, or "None"
	Port            uint16
	ProcessFullPath string
	ProcessCmdLine  string
	ResponseStatus  string // for example "403 Forbidden"
}

type summaryKey struct {
	userName, clientIP, ip        string
	port                          uint16
	fullPath, cmdLine, respStatus string
}

type bucket struct {
	start int64 // bucket index: unix time / Bucket
	count uint64
}

type summaryEntry struct {
	groups  []string
	buckets []bucket // oldest first
}

// SummaryAggregator counts requests per caller, destination and outcome in
// time buckets. Record is cheap enough to call on every request: one short
// critical section and one map lookup. Safe for concurrent use.
type SummaryAggregator struct {
	width   int64 // nanoseconds
	keep    int64 // buckets kept
	max     int
	mu      sync.Mutex
	entries map[summaryKey]*summaryEntry
	dropped atomic.Uint64
}

// NewSummaryAggregator returns an empty aggregator.
func NewSummaryAggregator(o *SummaryOptions) *SummaryAggregator {
	var opts SummaryOptions
	if o != nil {
		opts = *o
	}
	if opts.Bucket <= 0 {
		opts.Bucket = DefaultSummaryBucket
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultSummaryRetention
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultSummaryMaxEntries
	}
	keep := int64(opts.Retention / opts.Bucket)
	if keep < 1 {
		keep = 1
	}
	return &SummaryAggregator{
		width:   int64(opts.Bucket),
		keep:    keep,
		max:     opts.MaxEntries,
		entries: make(map[summaryKey]*summaryEntry),
	}
}

// Record counts c at time now. It reports whether this opened a new bucket
// for c's group, which is when upstream logs the connection to its
// connection log; callers may do the same.
func (a *SummaryAggregator) Record(now time.Time, c Connection) (newBucket bool) {
	k := summaryKey{c.UserName, c.ClientIP, c.IP, c.Port, c.ProcessFullPath, c.ProcessCmdLine, c.ResponseStatus}
	idx := now.UnixNano() / a.width
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entries[k]
	if e == nil {
		if len(a.entries) >= a.max {
			a.pruneLocked(idx)
			if len(a.entries) >= a.max {
				a.dropped.Add(1)
				return false
			}
		}
		e = &summaryEntry{groups: slices.Clone(c.UserGroups)}
		a.entries[k] = e
	}
	// A clock that stepped back counts into the newest bucket rather than
	// breaking the time order dropOld relies on.
	if n := len(e.buckets); n > 0 && e.buckets[n-1].start >= idx {
		e.buckets[n-1].count++
		return false
	}
	e.buckets = append(e.buckets, bucket{start: idx, count: 1})
	e.buckets = dropOld(e.buckets, idx-a.keep)
	return true
}

// Dropped returns how many requests were not counted because MaxEntries
// distinct groups were already kept.
func (a *SummaryAggregator) Dropped() uint64 { return a.dropped.Load() }

// Snapshot returns the current summary, dropping buckets that are older
// than the retention. The order is stable: by user, destination, port,
// process, command line, response status and client address.
func (a *SummaryAggregator) Snapshot(now time.Time) []ConnectionSummary {
	idx := now.UnixNano() / a.width
	a.mu.Lock()
	a.pruneLocked(idx)
	type row struct {
		clientIP string // not written, but it splits rows, so it orders them too
		s        ConnectionSummary
	}
	rows := make([]row, 0, len(a.entries))
	for k, e := range a.entries {
		var n uint64
		for _, b := range e.buckets {
			n += b.count
		}
		rows = append(rows, row{k.clientIP, ConnectionSummary{
			UserName: k.userName, IP: k.ip, Port: k.port,
			ProcessCmdLine: k.cmdLine, ResponseStatus: k.respStatus, Count: n,
			UserGroups: slices.Clone(e.groups), ProcessFullPath: k.fullPath,
		}})
	}
	a.mu.Unlock()
	slices.SortFunc(rows, func(x, y row) int {
		return cmp.Or(
			cmp.Compare(x.s.UserName, y.s.UserName),
			cmp.Compare(x.s.IP, y.s.IP),
			cmp.Compare(x.s.Port, y.s.Port),
			cmp.Compare(x.s.ProcessFullPath, y.s.ProcessFullPath),
			cmp.Compare(x.s.ProcessCmdLine, y.s.ProcessCmdLine),
			cmp.Compare(x.s.ResponseStatus, y.s.ResponseStatus),
			cmp.Compare(x.clientIP, y.clientIP),
		)
	})
	out := make([]ConnectionSummary, len(rows))
	for i, r := range rows {
		out[i] = r.s
	}
	return out
}

// pruneLocked drops buckets that fell out of the retention window, and
// entries left with none.
func (a *SummaryAggregator) pruneLocked(idx int64) {
	oldest := idx - a.keep
	for k, e := range a.entries {
		e.buckets = dropOld(e.buckets, oldest)
		if len(e.buckets) == 0 {
			delete(a.entries, k)
		}
	}
}

// dropOld removes buckets whose index is at or before oldest. Buckets are
// appended in time order, so they form a prefix.
func dropOld(b []bucket, oldest int64) []bucket {
	i := 0
	for i < len(b) && b[i].start <= oldest {
		i++
	}
	if i == 0 {
		return b
	}
	return append(b[:0], b[i:]...)
}
