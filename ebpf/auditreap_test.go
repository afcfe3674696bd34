//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
)

// fakeAuditMap deletes as the kernel's generic batch delete does: in
// order, stopping at the first missing key and reporting how many went.
type fakeAuditMap struct {
	noBatch bool // the kernel has no batch API

	mu      sync.Mutex
	present map[redirectGpaAuditKey]bool
	calls   []string
	flushed chan int // keys removed by each BatchDelete call
}

func newFakeAuditMap(ports ...uint16) *fakeAuditMap {
	f := &fakeAuditMap{present: map[redirectGpaAuditKey]bool{}, flushed: make(chan int, 100)}
	for _, p := range ports {
		f.present[auditKey(p)] = true
	}
	return f
}

func (f *fakeAuditMap) BatchDelete(keys any, _ *ebpf.BatchOptions) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ks := keys.([]redirectGpaAuditKey)
	f.calls = append(f.calls, fmt.Sprintf("batch %d", len(ks)))
	if f.noBatch {
		return 0, ebpf.ErrNotSupported
	}
	for i, k := range ks {
		if !f.present[k] {
			f.flushed <- i
			return i, fmt.Errorf("batch delete: %w", ebpf.ErrKeyNotExist)
		}
		delete(f.present, k)
	}
	f.flushed <- len(ks)
	return len(ks), nil
}

func (f *fakeAuditMap) Delete(key any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := *key.(*redirectGpaAuditKey)
	f.calls = append(f.calls, fmt.Sprintf("delete %d", k.SourcePort))
	if !f.present[k] {
		return ebpf.ErrKeyNotExist
	}
	delete(f.present, k)
	return nil
}

func (f *fakeAuditMap) left() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint32
	for k := range f.present {
		out = append(out, k.SourcePort)
	}
	return out
}

func (f *fakeAuditMap) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func ports(from, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = uint16(from + i)
	}
	return out
}

// waitFlush waits for one BatchDelete call; the bound only turns a hang
// into a failure.
func waitFlush(t *testing.T, f *fakeAuditMap) {
	t.Helper()
	select {
	case <-f.flushed:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch delete")
	}
}

func TestAuditReaperFullBatchGoesAtOnce(t *testing.T) {
	f := newFakeAuditMap(ports(1000, 2*reapBatch)...)
	r := newAuditReaper(f, time.Hour, reapBatch)
	defer r.close()
	for _, p := range ports(1000, reapBatch) {
		r.add(auditKey(p))
	}
	waitFlush(t, f)
	if got := len(f.left()); got != reapBatch {
		t.Errorf("%d entries left after a full batch, want %d", got, reapBatch)
	}
	if diff := cmp.Diff([]string{"batch 64"}, f.log()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestAuditReaperDelayFlushesAPartialBatch(t *testing.T) {
	f := newFakeAuditMap(7)
	r := newAuditReaper(f, time.Millisecond, reapBatch)
	defer r.close()
	r.add(auditKey(7))
	waitFlush(t, f)
	if left := f.left(); len(left) != 0 {
		t.Errorf("entries left: %v", left)
	}
	// Idle again, a later key starts a new batch.
	f.mu.Lock()
	f.present[auditKey(8)] = true
	f.mu.Unlock()
	r.add(auditKey(8))
	waitFlush(t, f)
	if left := f.left(); len(left) != 0 {
		t.Errorf("entries left after the second batch: %v", left)
	}
}

func TestAuditReaperClose(t *testing.T) {
	tests := []struct {
		name      string
		present   []uint16
		add       []uint16
		noBatch   bool
		wantLeft  []uint32
		wantCalls []string
	}{
		{name: "flushes what is queued", present: []uint16{1, 2, 3}, add: []uint16{1, 2},
			wantLeft: []uint32{3}, wantCalls: []string{"batch 2"}},
		// LRU evicted 2 already, and 3 was queued twice: the batch
		// resumes after each missing key.
		{name: "skips missing keys", present: []uint16{1, 3, 4}, add: []uint16{1, 2, 3, 3, 4},
			wantCalls: []string{"batch 5", "batch 3", "batch 1"}},
		{name: "no batch API", present: []uint16{1, 2}, add: []uint16{1, 2}, noBatch: true,
			wantCalls: []string{"batch 2", "delete 1", "delete 2"}},
		{name: "nothing queued", present: []uint16{1}, wantLeft: []uint32{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAuditMap(tt.present...)
			f.noBatch = tt.noBatch
			r := newAuditReaper(f, time.Hour, reapBatch)
			for _, p := range tt.add {
				r.add(auditKey(p))
			}
			r.close()
			r.close() // a second close is harmless
			if diff := cmp.Diff(tt.wantLeft, f.left()); diff != "" {
				t.Errorf("entries left (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCalls, f.log()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

// A reaper that cannot keep up drops keys beyond reapMax rather than
// grow: audit_map's LRU evicts those entries.
func TestAuditReaperBounded(t *testing.T) {
	n := reapMax + 10
	f := newFakeAuditMap(ports(1, n)...)
	r := newAuditReaper(f, time.Hour, n+1)
	for _, p := range ports(1, n) {
		r.add(auditKey(p))
	}
	r.close()
	if got := len(f.left()); got != n-reapMax {
		t.Errorf("%d entries left, want %d", got, n-reapMax)
	}
}
