//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"testing"

	"github.com/metadatasec/gpa/msp"
)

// withoutGeneration checks the record's process generation against /proc
// (StartTime is the instant of /proc/<pid>/stat field 22, in ns instead of
// ticks; ExecID is set) and returns the record with both cleared, so the
// caller can compare the rest.
func withoutGeneration(t testing.TB, rec msp.ConnectRecord, pid uint32) msp.ConnectRecord {
	t.Helper()
	ticks, err := processStart("/proc", int(pid))
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.StartTime / uint64(nsPerTick); got != ticks {
		t.Errorf("record StartTime %d ns is tick %d; /proc/%d/stat says %d", rec.StartTime, got, pid, ticks)
	}
	if rec.ExecID == 0 {
		t.Errorf("record ExecID is 0 (not recorded)")
	}
	if !rec.Generation() {
		t.Errorf("record %+v has no generation", rec)
	}
	rec.StartTime, rec.ExecID = 0, 0
	return rec
}

// TestCallerGeneration is what the proxy's process cache relies on: an exec
// keeps pid and start time but changes ExecID; another process has
// another start time.
func TestCallerGeneration(t *testing.T) {
	cg := newTestCgroup(t)
	r := mustLoad(t, Options{CgroupPath: cg.path})
	protected := listen(t, "127.0.0.77:0")
	proxy := listen(t, "127.0.0.1:0")
	if err := r.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	exe := exeFor(t)

	connect := func(h *helper) msp.ConnectRecord {
		t.Helper()
		client := expectLanding(t, proxy, protected, h.dial(t, "4", protected.addr))
		rec, err := r.Audit().LookupAndDelete(client)
		if err != nil {
			t.Fatal(err)
		}
		withoutGeneration(t, rec, h.pid)
		return rec
	}
	gen := func(rec msp.ConnectRecord) [3]uint64 {
		return [3]uint64{uint64(rec.PID), rec.StartTime, rec.ExecID}
	}

	h := startHelper(t, helperOpts{mode: "dial", cgroup: cg, exe: exe})
	first := connect(h)
	again := connect(h)
	if gen(first) != gen(again) {
		t.Errorf("one process image, two generations: %v then %v", gen(first), gen(again))
	}

	h.exec(t)
	execed := connect(h)
	if execed.PID != first.PID || execed.StartTime != first.StartTime {
		t.Errorf("after exec pid/start = %d/%d, want %d/%d (same process)", execed.PID, execed.StartTime, first.PID, first.StartTime)
	}
	if execed.ExecID == first.ExecID {
		t.Errorf("ExecID %d did not change across exec", execed.ExecID)
	}

	other := connect(startHelper(t, helperOpts{mode: "dial", cgroup: cg, exe: exe}))
	if other.StartTime == first.StartTime && other.PID == first.PID {
		t.Errorf("another process has the first one's pid and start time: %v", gen(other))
	}
	if other.StartTime <= first.StartTime {
		t.Errorf("a later process started at %d ns, not after %d", other.StartTime, first.StartTime)
	}
}
