package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/msp"
)

// countingFS reads the real (fake-tree) files and counts every read.
type countingFS struct{ n atomic.Int64 }

func (c *countingFS) readlink(path string) (string, error) {
	c.n.Add(1)
	return osProcFS{}.readlink(path)
}

func (c *countingFS) readFile(path string, max int) ([]byte, error) {
	c.n.Add(1)
	return osProcFS{}.readFile(path, max)
}

// recordLookup hands out rec for every connection (not one-shot), so one
// test can resolve the same process many times.
type recordLookup struct {
	mu  sync.Mutex
	rec msp.ConnectRecord
}

func (l *recordLookup) set(r msp.ConnectRecord) {
	l.mu.Lock()
	l.rec = r
	l.mu.Unlock()
}

func (l *recordLookup) LookupAndDelete(netip.AddrPort) (msp.ConnectRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec, nil
}

// fakeProc is a /proc tree in a temporary directory.
type fakeProc struct {
	t    testing.TB
	root string
}

func newFakeProc(t testing.TB) *fakeProc { return &fakeProc{t: t, root: t.TempDir()} }

// set makes pid's exe link point at exe (none when empty) and its cmdline
// hold args.
func (f *fakeProc) set(pid int, exe string, args ...string) {
	f.t.Helper()
	d := filepath.Join(f.root, strconv.Itoa(pid))
	if err := os.MkdirAll(d, 0o755); err != nil {
		f.t.Fatal(err)
	}
	os.Remove(filepath.Join(d, "exe"))
	if exe != "" {
		if err := os.Symlink(exe, filepath.Join(d, "exe")); err != nil {
			f.t.Fatal(err)
		}
	}
	var b []byte
	for _, a := range args {
		b = append(append(b, a...), 0)
	}
	if err := os.WriteFile(filepath.Join(d, "cmdline"), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func testUsers(uid uint32) (string, []string, error) {
	if uid == 0 {
		return "root", []string{"root"}, nil
	}
	return "u" + strconv.Itoa(int(uid)), []string{"users"}, nil
}

// procClaims is the part of the claims that comes from /proc and the
// record's uid.
type procClaims struct {
	PID          uint32
	Exe, CmdLine string
	User         string
	Elevated     bool
}

func TestProcResolverProcessCache(t *testing.T) {
	proc := newFakeProc(t)
	proc.set(100, "/usr/bin/curl", "curl", "--token", "hunter2", "http://169.254.169.254/")
	proc.set(101, "", "ghost")
	fs := &countingFS{}
	lk := &recordLookup{}
	r := NewProcResolver(lk, &ProcResolverOptions{ProcRoot: proc.root, LookupUser: testUsers})
	r.fs = fs

	curl := procClaims{PID: 100, Exe: "/usr/bin/curl", CmdLine: "curl --token [REDACTED] http://169.254.169.254/", User: "u1000"}
	python := procClaims{PID: 100, Exe: "/usr/bin/python3", CmdLine: "python3 app.py", User: "u1000"}
	steps := []struct {
		name      string
		before    func() // changes the fake /proc first
		rec       msp.ConnectRecord
		want      procClaims
		wantReads int64 // per resolve
		times     int   // resolves; 1 when zero
	}{
		{name: "first connection reads /proc",
			rec: msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: 1}, want: curl, wantReads: 2},
		{name: "same image is a hit",
			rec: msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: 1}, want: curl, wantReads: 0},
		// A setuid program keeps its image, not its uid: the user
		// comes from the record.
		{name: "same image, other uid",
			rec:  msp.ConnectRecord{PID: 100, UID: 0, StartTime: 5e9, ExecID: 1},
			want: procClaims{PID: 100, Exe: curl.Exe, CmdLine: curl.CmdLine, User: "root", Elevated: true}, wantReads: 0},
		{name: "exec: new exec id misses",
			before: func() { proc.set(100, "/usr/bin/python3", "python3", "app.py") },
			rec:    msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: 2}, want: python, wantReads: 2},
		{name: "exec'd image is a hit",
			rec: msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: 2}, want: python, wantReads: 0},
		{name: "pid reuse: new start time misses",
			before: func() { proc.set(100, "/usr/bin/wget", "wget") },
			rec:    msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 9e9, ExecID: 2},
			want:   procClaims{PID: 100, Exe: "/usr/bin/wget", CmdLine: "wget", User: "u1000"}, wantReads: 2},
		{name: "no start time: never cached", times: 2,
			rec:  msp.ConnectRecord{PID: 100, UID: 1000, ExecID: 2},
			want: procClaims{PID: 100, Exe: "/usr/bin/wget", CmdLine: "wget", User: "u1000"}, wantReads: 2},
		{name: "no exec id: never cached", times: 2,
			rec:  msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 9e9},
			want: procClaims{PID: 100, Exe: "/usr/bin/wget", CmdLine: "wget", User: "u1000"}, wantReads: 2},
		{name: "unreadable exe is not cached", times: 2,
			rec:  msp.ConnectRecord{PID: 101, UID: 1000, StartTime: 7e9, ExecID: 1},
			want: procClaims{PID: 101, CmdLine: "ghost", User: "u1000"}, wantReads: 2},
		{name: "a process with no /proc entry is not cached", times: 2,
			rec:  msp.ConnectRecord{PID: 102, UID: 1000, StartTime: 7e9, ExecID: 1},
			want: procClaims{PID: 102, CmdLine: cmdlineUnknown, User: "u1000"}, wantReads: 2},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		st.rec.OriginalDst = msp.IMDSAddr
		lk.set(st.rec)
		for range max(st.times, 1) {
			resolveStep(t, r, fs, st.name, st.want, st.wantReads)
		}
	}
	// curl, python3 and wget: one entry per image, nothing for failures
	// or records without a generation.
	if n := r.procs.len(); n != 3 {
		t.Errorf("cache holds %d entries, want 3", n)
	}
}

// resolveStep resolves one connection and checks the claims that come
// from /proc and the record, and how many /proc reads it took.
func resolveStep(t *testing.T, r *ProcResolver, fs *countingFS, name string, want procClaims, wantReads int64) {
	t.Helper()
	before := fs.n.Load()
	c, err := r.Resolve(context.Background(), connFrom(5000))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	got := procClaims{PID: c.Claims.ProcessID, Exe: c.Claims.ProcessFullPath, CmdLine: c.Claims.ProcessCmdLine,
		User: c.Claims.UserName, Elevated: c.Claims.RunAsElevated}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: claims (-want +got):\n%s", name, diff)
	}
	if want.Exe != "" && c.Claims.ProcessName != filepath.Base(want.Exe) {
		t.Errorf("%s: process name %q for exe %q", name, c.Claims.ProcessName, want.Exe)
	}
	if reads := fs.n.Load() - before; reads != wantReads {
		t.Errorf("%s: %d /proc reads, want %d", name, reads, wantReads)
	}
}

func TestProcResolverProcessCacheDisabled(t *testing.T) {
	proc := newFakeProc(t)
	proc.set(100, "/usr/bin/curl", "curl")
	fs := &countingFS{}
	lk := &recordLookup{rec: msp.ConnectRecord{PID: 100, StartTime: 5e9, ExecID: 1, OriginalDst: msp.IMDSAddr}}
	r := NewProcResolver(lk, &ProcResolverOptions{ProcRoot: proc.root, LookupUser: testUsers, ProcessCacheSize: -1})
	r.fs = fs
	for range 3 {
		if _, err := r.Resolve(context.Background(), connFrom(5000)); err != nil {
			t.Fatal(err)
		}
	}
	if n := fs.n.Load(); n != 6 {
		t.Errorf("%d /proc reads for 3 connections with the cache off, want 6", n)
	}
}

func TestProcCacheBounded(t *testing.T) {
	c := &procCache{max: 4, m: map[procKey]procInfo{}}
	for i := range uint32(100) {
		c.put(procKey{pid: i, start: 1, exec: 1}, procInfo{exe: "/bin/x", name: "x", cmdline: "x"})
		if n := c.len(); n > 4 {
			t.Fatalf("cache holds %d entries after %d puts, bound 4", n, i+1)
		}
	}
	// The last one put is always there: eviction makes room for it.
	if _, ok := c.get(procKey{pid: 99, start: 1, exec: 1}); !ok {
		t.Error("the entry just put is missing")
	}
	// Replacing an entry of a full cache evicts nothing else.
	c.put(procKey{pid: 99, start: 1, exec: 1}, procInfo{exe: "/bin/y"})
	if n := c.len(); n != 4 {
		t.Errorf("cache holds %d entries after a replace, want 4", n)
	}
	// A huge command line is not kept.
	big := procKey{pid: 1000, start: 1, exec: 1}
	c.put(big, procInfo{exe: "/bin/x", cmdline: string(make([]byte, procCacheEntryMax))})
	if _, ok := c.get(big); ok {
		t.Error("an entry over procCacheEntryMax was cached")
	}
}

// TestProcResolverProcessCacheConcurrent resolves many processes from many
// goroutines against a cache smaller than their number (so entries are
// evicted while read); run it with -race.
func TestProcResolverProcessCacheConcurrent(t *testing.T) {
	proc := newFakeProc(t)
	const procs = 16
	for pid := range procs {
		proc.set(1000+pid, fmt.Sprintf("/usr/bin/p%d", pid), fmt.Sprintf("p%d", pid))
	}
	lk := &mapLookup{m: map[uint16]msp.ConnectRecord{}}
	r := NewProcResolver(lk, &ProcResolverOptions{ProcRoot: proc.root, LookupUser: testUsers, ProcessCacheSize: procs / 2})
	const perWorker = 50
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range perWorker {
				pid := (w + i) % procs
				port := uint16(10000 + w*perWorker + i)
				lk.mu.Lock()
				lk.m[port] = msp.ConnectRecord{PID: uint32(1000 + pid), UID: 1000, StartTime: uint64(pid + 1), ExecID: 1, OriginalDst: msp.IMDSAddr}
				lk.mu.Unlock()
				c, err := r.Resolve(context.Background(), connFrom(port))
				if err != nil {
					t.Error(err)
					return
				}
				if want := fmt.Sprintf("/usr/bin/p%d", pid); c.Claims.ProcessFullPath != want || c.Claims.ProcessCmdLine != fmt.Sprintf("p%d", pid) {
					t.Errorf("pid %d: exe %q cmdline %q", 1000+pid, c.Claims.ProcessFullPath, c.Claims.ProcessCmdLine)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := r.procs.len(); n > procs/2 {
		t.Errorf("cache holds %d entries, bound %d", n, procs/2)
	}
}

// BenchmarkResolve is the identify stage for a new connection: hit is a
// process read before (no /proc I/O), miss one never seen (a new exec id
// each time, so every iteration reads /proc and fills the cache).
func BenchmarkResolve(b *testing.B) {
	proc := newFakeProc(b)
	proc.set(100, "/usr/local/bin/client", string(benchCmdline[:len(benchCmdline)-1]))
	users := func(uint32) (string, []string, error) { return "bench", []string{"bench"}, nil }
	run := func(b *testing.B, next func(i uint64) msp.ConnectRecord) {
		lk := &recordLookup{}
		r := NewProcResolver(lk, &ProcResolverOptions{ProcRoot: proc.root, LookupUser: users})
		conn := connFrom(5000)
		b.ReportAllocs()
		var i uint64
		for b.Loop() {
			i++
			lk.rec = next(i)
			if _, err := r.Resolve(context.Background(), conn); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("hit", func(b *testing.B) {
		run(b, func(uint64) msp.ConnectRecord {
			return msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: 1, OriginalDst: msp.IMDSAddr}
		})
	})
	b.Run("miss", func(b *testing.B) {
		run(b, func(i uint64) msp.ConnectRecord {
			return msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: i, OriginalDst: msp.IMDSAddr}
		})
	})
}
