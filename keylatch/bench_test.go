package keylatch

import (
	"context"
	"testing"

	"github.com/metadatasec/gpa/msp/msptest"
)

// BenchmarkCurrent measures what the proxy pays per request to get a
// consistent view of key and rules.
func BenchmarkCurrent(b *testing.B) {
	l, err := NewLatcher(&LatcherOptions{Client: NewClient(nil), Store: &Store{}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if l.Current() == nil {
				b.Fatal("nil snapshot")
			}
		}
	})
}

// BenchmarkSteadyPoll measures one poll of a latched agent against a
// loopback host: one status round trip, rules compiled, nothing published.
func BenchmarkSteadyPoll(b *testing.B) {
	h := msptest.NewHost(&msptest.Options{Rules: enforceAll()})
	defer h.Close()
	dir := b.TempDir() + "/keys"
	s, err := OpenStore(&StoreOptions{Dir: dir, Owner: ownerForBench()})
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewLatcher(&LatcherOptions{Client: NewClient(&ClientOptions{Addr: h.WireServerAddr()}), Store: s})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	l.Poll(ctx)
	if !l.Current().Latched() {
		b.Fatal("not latched")
	}
	epoch := l.Current().Epoch
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l.Poll(ctx)
	}
	b.StopTimer()
	if l.Current().Epoch != epoch {
		b.Fatal("a steady poll published")
	}
}
