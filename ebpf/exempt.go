//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Exemption is a process whose connections are never redirected, named so
// that a later process given the same pid is not: by its pid and by when it
// started.
type Exemption struct {
	// PID is the thread group id in the initial pid namespace.
	PID uint32
	// StartTicks is when the process started, in clock ticks since boot:
	// field 22 of /proc/<PID>/stat.
	StartTicks uint64
}

// userHZ is the tick the kernel reports start times in, and the one the
// programs divide by (GPA_NSEC_PER_TICK in redirect.c).
const userHZ = 100

const nsPerTick = int64(time.Second) / userHZ

// ExemptSelf exempts the calling process from redirection, so its own
// connections to protected endpoints (the agent's upstream requests) reach
// them. The exemption is keyed by pid and start time, so it dies with the
// process: a later process given the same pid is redirected. Close (or
// Unexempt) removes it; an exemption left by a killed process is removed
// by the next Load. The process must run in the initial pid namespace, as
// the kernel programs see tgids there.
func (r *Redirector) ExemptSelf() error {
	self, err := selfExemption()
	if err != nil {
		return err
	}
	key := redirectGpaExemptKey{Tgid: self.PID}
	val := redirectGpaExemption{StartTicks: self.StartTicks}
	r.exemptMu.Lock()
	defer r.exemptMu.Unlock()
	if err := r.objs.GpaExemptMap.Update(&key, &val, ebpf.UpdateAny); err != nil {
		return &MapError{Op: "update", Map: redirectMapGpaExemptMap, Key: exemptionKey(self), Err: err}
	}
	r.exempted = &self
	return nil
}

// Unexempt removes the exemption ExemptSelf made. Without one it does
// nothing.
func (r *Redirector) Unexempt() error {
	r.exemptMu.Lock()
	defer r.exemptMu.Unlock()
	return r.unexemptLocked()
}

func (r *Redirector) unexemptLocked() error {
	self := r.exempted
	if self == nil {
		return nil
	}
	m := r.objs.GpaExemptMap
	if m == nil {
		return nil
	}
	// While we run nobody else can hold our pid, so the entry under it
	// is ours.
	key := redirectGpaExemptKey{Tgid: self.PID}
	if err := m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return &MapError{Op: "delete", Map: redirectMapGpaExemptMap, Key: exemptionKey(*self), Err: err}
	}
	r.exempted = nil
	return nil
}

// Exemptions lists the exempt processes, sorted by pid.
func (r *Redirector) Exemptions() ([]Exemption, error) {
	return listExemptions(r.objs.GpaExemptMap)
}

func listExemptions(m *ebpf.Map) ([]Exemption, error) {
	var (
		out []Exemption
		key redirectGpaExemptKey
		val redirectGpaExemption
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		out = append(out, Exemption{PID: key.Tgid, StartTicks: val.StartTicks})
	}
	if err := it.Err(); err != nil {
		return nil, &MapError{Op: "iterate", Map: redirectMapGpaExemptMap, Err: err}
	}
	slices.SortFunc(out, func(a, b Exemption) int { return cmp.Compare(a.PID, b.PID) })
	return out, nil
}

// pruneExemptions removes every exemption whose process is gone (no such
// pid, or the pid now belongs to a process that started at another time).
// Load runs it, so a map that outlives its agents through pins holds only
// live ones and never fills up with the dead.
func pruneExemptions(m *ebpf.Map) error {
	list, err := listExemptions(m)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range list {
		start, err := processStart("/proc", int(e.PID))
		if err == nil && start == e.StartTicks {
			continue
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			// Unreadable for another reason: the process may be
			// alive, so keep its exemption and say so.
			errs = append(errs, err)
			continue
		}
		key := redirectGpaExemptKey{Tgid: e.PID}
		if err := m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, &MapError{Op: "delete", Map: redirectMapGpaExemptMap, Key: exemptionKey(e), Err: err})
		}
	}
	return errors.Join(errs...)
}

func exemptionKey(e Exemption) string {
	return fmt.Sprintf("pid %d started at tick %d", e.PID, e.StartTicks)
}

// selfExemption returns the calling process's exemption. It returns only
// once the tick the process started in is over: a process that gets our pid
// after we exit then starts in a later tick, so it cannot match even at
// this resolution.
func selfExemption() (Exemption, error) {
	if hz, ok := clockTicks(); ok && hz != userHZ {
		return Exemption{}, fmt.Errorf("%w: clock ticks are %d Hz, the programs assume %d", ErrNotSupported, hz, userHZ)
	}
	pid := os.Getpid()
	start, err := processStart("/proc", pid)
	if err != nil {
		return Exemption{}, err
	}
	end := int64(start+1) * nsPerTick
	for {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
			return Exemption{}, fmt.Errorf("ebpf: read CLOCK_BOOTTIME: %w", err)
		}
		left := end - ts.Nano()
		if left <= 0 {
			break
		}
		time.Sleep(time.Duration(left))
	}
	return Exemption{PID: uint32(pid), StartTicks: start}, nil
}

// atClkTck is the auxiliary vector entry holding USER_HZ (elf.h).
const atClkTck = 17

// clockTicks returns AT_CLKTCK, the USER_HZ of the running kernel.
func clockTicks() (uint64, bool) {
	auxv, err := unix.Auxv()
	if err != nil {
		return 0, false
	}
	for _, kv := range auxv {
		if kv[0] == atClkTck {
			return uint64(kv[1]), true
		}
	}
	return 0, false
}

// processStart reads field 22 (starttime) of <proc>/<pid>/stat. A process
// that does not exist gives an error matching os.ErrNotExist.
func processStart(proc string, pid int) (uint64, error) {
	b, err := os.ReadFile(proc + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatStart(b)
}

// parseStatStart takes starttime out of a /proc/<pid>/stat line. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from its last ')'.
func parseStatStart(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("ebpf: malformed stat line %q", b)
	}
	// After ") " come field 3 (state) onwards; starttime is field 22.
	f := bytes.Fields(b[i+1:])
	const starttime = 22 - 3
	if len(f) <= starttime {
		return 0, fmt.Errorf("ebpf: stat line has %d fields after the command, want more than %d", len(f), starttime)
	}
	v, err := strconv.ParseUint(string(f[starttime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ebpf: stat starttime: %w", err)
	}
	return v, nil
}
