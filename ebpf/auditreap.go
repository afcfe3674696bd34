//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// Upstream's proxy removes the audit_map entry of every connection it
// accepts (proxy_connection.rs: lookup_audit, then remove_audit). We do the
// same, but a delete per connection is a system call on the accept path
// for a map only other tools read, so the keys are gathered and removed
// in batches.
const (
	// reapBatch keys make a full batch, removed at once.
	reapBatch = 64
	// reapDelay is the longest a key waits for its batch to fill.
	reapDelay = 100 * time.Millisecond
	// reapMax bounds the keys waiting. audit_map holds 200 entries, so
	// more would be keys LRU has evicted already; past it keys are
	// dropped and LRU evicts their entries instead.
	reapMax = 256
)

// batchDeleter is what the reaper needs of a map; *ebpf.Map has it.
type batchDeleter interface {
	BatchDelete(keys any, opts *ebpf.BatchOptions) (int, error)
	Delete(key any) error
}

// auditReaper removes consumed audit_map entries in batches from one
// goroutine, which close stops after a last flush.
//
// A key waits at most reapDelay. If the client port is reused by another
// redirected connection in that time, the reaper may remove the newer
// entry; audit_map is informational (the proxy reads gpa_caller_map, keyed
// by address and port too), so that costs a tool one entry, never the
// proxy a caller.
type auditReaper struct {
	m     batchDeleter
	delay time.Duration
	batch int

	mu   sync.Mutex
	keys []redirectGpaAuditKey
	// spare is the slice the last flush used, handed back so a steady
	// stream of connections does not allocate a slice per batch.
	spare []redirectGpaAuditKey

	pending chan struct{} // the first key of a batch arrived
	full    chan struct{} // a batch is full
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newAuditReaper(m batchDeleter, delay time.Duration, batch int) *auditReaper {
	r := &auditReaper{
		m: m, delay: delay, batch: batch,
		pending: make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go r.run()
	return r
}

// add queues k for removal. It never blocks on the map.
func (r *auditReaper) add(k redirectGpaAuditKey) {
	r.mu.Lock()
	if len(r.keys) >= reapMax {
		r.mu.Unlock()
		return
	}
	r.keys = append(r.keys, k)
	n := len(r.keys)
	r.mu.Unlock()
	if n == 1 {
		notify(r.pending)
	}
	if n >= r.batch {
		notify(r.full)
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run waits for a first key, then for the batch to fill or reapDelay,
// whichever comes first, and flushes. Idle, it sleeps without a timer.
func (r *auditReaper) run() {
	defer close(r.done)
	for {
		select {
		case <-r.pending:
		case <-r.stop:
			r.flush()
			return
		}
		t := time.NewTimer(r.delay)
		select {
		case <-t.C:
		case <-r.full:
		case <-r.stop:
			t.Stop()
			r.flush()
			return
		}
		t.Stop()
		r.flush()
	}
}

// flush removes every queued key. A key already gone (LRU evicted it, or
// it was queued twice) stops a kernel batch, so the batch resumes after
// it; any other failure falls back to single deletes, whose errors are
// ignored: an entry left behind is one LRU evicts.
func (r *auditReaper) flush() {
	r.mu.Lock()
	keys := r.keys
	r.keys = r.spare[:0]
	r.spare = nil
	r.mu.Unlock()
	for rest := keys; len(rest) > 0; {
		n, err := r.m.BatchDelete(rest, nil)
		if err == nil {
			break
		}
		n = min(max(n, 0), len(rest))
		if errors.Is(err, ebpf.ErrKeyNotExist) && n < len(rest) {
			rest = rest[n+1:]
			continue
		}
		for i := n; i < len(rest); i++ {
			_ = r.m.Delete(&rest[i])
		}
		break
	}
	r.mu.Lock()
	if r.spare == nil {
		r.spare = keys[:0]
	}
	r.mu.Unlock()
}

// close flushes what is queued and stops the goroutine. Safe to call more
// than once; add must not be called after it.
func (r *auditReaper) close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}
