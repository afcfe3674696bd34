//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStatStart(t *testing.T) {
	// Fields 3..21 are filler; field 22 is the start time.
	rest := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21 22\n"
	tests := []struct {
		name    string
		line    string
		want    uint64
		wantErr bool
	}{
		{name: "plain", line: "123 (agent)" + rest, want: 4242},
		{name: "command with spaces and parentheses", line: "123 (a) b (c) d)" + rest, want: 4242},
		{name: "command that looks like fields", line: "123 (1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23)" + rest, want: 4242},
		{name: "no command", line: "123 agent S 1 2", wantErr: true},
		{name: "truncated", line: "123 (agent) S 1 2 3", wantErr: true},
		{name: "not a number", line: "123 (agent) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20", wantErr: true},
		{name: "empty", line: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatStart([]byte(tt.line))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatStart = %d, %v; want error %v", got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStatStart = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestProcessStartOfMissingProcess(t *testing.T) {
	// Above any pid_max (at most 2^22), so no such process.
	if _, err := processStart("/proc", 1<<23); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("processStart(no such pid) = %v, want os.ErrNotExist", err)
	}
}

func selfStart(t testing.TB) Exemption {
	t.Helper()
	start, err := processStart("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return Exemption{PID: uint32(os.Getpid()), StartTicks: start}
}

func exemptions(t testing.TB, r *Redirector) []Exemption {
	t.Helper()
	list, err := r.Exemptions()
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestExemptSelfUnexemptAndPrune(t *testing.T) {
	cg := newTestCgroup(t)
	pin := mountBPFFS(t)
	t.Cleanup(func() { RemovePins(pin) })

	r1 := mustLoad(t, Options{CgroupPath: cg.path, PinPath: pin})
	if err := r1.ExemptSelf(); err != nil {
		t.Fatal(err)
	}
	self := selfStart(t)
	if diff := cmp.Diff([]Exemption{self}, exemptions(t, r1)); diff != "" {
		t.Fatalf("after ExemptSelf (-want +got):\n%s", diff)
	}
	if err := r1.Unexempt(); err != nil {
		t.Fatal(err)
	}
	if got := exemptions(t, r1); len(got) != 0 {
		t.Fatalf("after Unexempt: %v, want none", got)
	}
	if err := r1.Unexempt(); err != nil {
		t.Errorf("second Unexempt: %v", err)
	}

	// Entries of processes that are gone: a pid nobody has, and pid 1
	// (alive) with a start time that is not its own.
	initStart, err := processStart("/proc", 1)
	if err != nil {
		t.Fatal(err)
	}
	putExemption(t, r1, Exemption{PID: 1 << 23, StartTicks: 5})
	putExemption(t, r1, Exemption{PID: 1, StartTicks: initStart + 1})
	if err := r1.ExemptSelf(); err != nil {
		t.Fatal(err)
	}
	if got := exemptions(t, r1); len(got) != 3 {
		t.Fatalf("before the restart: %v, want 3 entries", got)
	}

	// A restart prunes the dead; Close of the exempt one removes its own.
	r2 := mustLoad(t, Options{CgroupPath: cg.path, PinPath: pin})
	if diff := cmp.Diff([]Exemption{self}, exemptions(t, r2)); diff != "" {
		t.Errorf("after the next Load (-want +got):\n%s", diff)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := exemptions(t, r2); len(got) != 0 {
		t.Errorf("after Close of the exempt Redirector: %v, want none", got)
	}
}

// startAgent runs the agent helper in cg, pinned at pin.
func startAgent(t *testing.T, cg *testCgroup, pin, exe string) *helper {
	t.Helper()
	return startHelper(t, helperOpts{mode: "agent", cgroup: cg, exe: exe,
		env: []string{agentCgroupEnv + "=" + cg.path, agentPinEnv + "=" + pin}})
}

// end sends sig to the helper and waits for it to exit.
func (h *helper) end(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		if sig == syscall.SIGTERM && err != nil {
			t.Errorf("agent helper after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		<-done
		t.Fatalf("agent helper ignored %v", sig)
	}
	h.stdin.Close()
}

// agentExe returns the binary the agent helpers run: a copy of this test
// binary, or under -race one built without it. Every Load parses the
// kernel's BTF (for the exemption's CO-RE read), which race-instrumented
// code does about six times slower; the restart tests start a hundred
// agents and would spend minutes on it.
func agentExe(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return exeFor(t)
	}
	dir, err := os.MkdirTemp("", "gpa-ebpf-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "gpa-ebpf-helper")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "test", "-c", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("build the agent helper without -race: %v\n%s", err, out)
	}
	return exe
}

// pinnedRig loads pinned into a test cgroup with one protected loopback
// destination redirected to a stand-in proxy, as a first agent would, and
// returns what agent helpers need to take it over.
func pinnedRig(t *testing.T) (cg *testCgroup, pin, exe string, r *Redirector, protected, proxy *listener) {
	t.Helper()
	cg = newTestCgroup(t)
	pin = mountBPFFS(t)
	t.Cleanup(func() { RemovePins(pin) })
	protected = listen(t, "127.0.0.77:0")
	proxy = listen(t, "127.0.0.1:0")
	exe = agentExe(t)
	r = mustLoad(t, Options{CgroupPath: cg.path, PinPath: pin})
	if err := r.Policy().Set(protected.addr, proxy.addr); err != nil {
		t.Fatal(err)
	}
	return cg, pin, exe, r, protected, proxy
}

// A hundred restarts, clean and killed mixed, each one starting and
// leaving exactly its own exemption. The skip list this replaced (pid
// only, 10 entries, never cleaned) refused the tenth start.
func TestExemptionAcrossRestarts(t *testing.T) {
	cg, pin, exe, r, protected, proxy := pinnedRig(t)
	const restarts = 100
	kills := 0
	for i := range restarts {
		a := startAgent(t, cg, pin, exe) // fails t unless it loaded and exempted itself
		start, err := processStart("/proc", int(a.pid))
		if err != nil {
			t.Fatal(err)
		}
		want := []Exemption{{PID: a.pid, StartTicks: start}}
		if diff := cmp.Diff(want, exemptions(t, r)); diff != "" {
			t.Fatalf("start %d: exemptions (-want +got):\n%s", i, diff)
		}
		if i%10 == 0 {
			// The exemption works: the agent reaches the endpoint.
			expectLanding(t, protected, proxy, a.dial(t, "4", protected.addr))
		}
		// Mixed, not alternating, so runs of kills occur too.
		sig := syscall.SIGTERM
		if i%3 != 0 || i%7 == 0 {
			sig = syscall.SIGKILL
			kills++
		}
		a.end(t, sig)
		got := exemptions(t, r)
		if sig == syscall.SIGTERM && len(got) != 0 {
			t.Fatalf("after a clean stop %d: exemptions %v, want none", i, got)
		}
	}
	t.Logf("%d restarts, %d killed", restarts, kills)
	if n := countAttached(attachedPrograms(t, cg)); n != len(linkNames) {
		t.Errorf("%d programs attached after the restarts, want %d", n, len(linkNames))
	}
}

// processWithPid starts a dial helper in cg whose pid is pid, by setting
// ns_last_pid just below it and starting; other processes on the machine
// may take the pid first, so it tries a bounded number of times.
func processWithPid(t *testing.T, cg *testCgroup, pid uint32, exe string) *helper {
	t.Helper()
	const tries = 50
	for range tries {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.FormatUint(uint64(pid-1), 10)), 0); err != nil {
			t.Fatalf("set ns_last_pid: %v", err)
		}
		h := startHelper(t, helperOpts{mode: "dial", cgroup: cg, exe: exe,
			cred: &syscall.Credential{Uid: 65534, Gid: 65534}})
		if h.pid == pid {
			return h
		}
		h.stop()
	}
	t.Fatalf("no process got pid %d in %d tries", pid, tries)
	return nil
}

// An unprivileged process given a killed agent's pid is redirected like any
// other, before and after the next agent starts.
func TestReusedAgentPidIsRedirected(t *testing.T) {
	cg, pin, exe, r, protected, proxy := pinnedRig(t)
	a := startAgent(t, cg, pin, exe)
	expectLanding(t, protected, proxy, a.dial(t, "4", protected.addr))
	dead := a.pid
	a.end(t, syscall.SIGKILL)
	if got := exemptions(t, r); len(got) != 1 || got[0].PID != dead {
		t.Fatalf("after the kill: exemptions %v, want the dead agent's stale one", got)
	}

	imp := processWithPid(t, cg, dead, exe)
	res := imp.dial(t, "4", protected.addr)
	if res.Peer != protected.addr.String() {
		t.Errorf("getpeername() = %s, want %s", res.Peer, protected.addr)
	}
	client := expectLanding(t, proxy, protected, res)
	if rec, err := r.Audit().LookupAndDelete(client); err != nil || rec.PID != dead || rec.UID != 65534 {
		t.Errorf("caller record = %+v, %v; want pid %d uid 65534", rec, err, dead)
	}

	// The next agent removes the stale exemption; the impostor stays
	// redirected.
	b := startAgent(t, cg, pin, exe)
	startB, err := processStart("/proc", int(b.pid))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Exemption{{PID: b.pid, StartTicks: startB}}, exemptions(t, r)); diff != "" {
		t.Errorf("after the restart (-want +got):\n%s", diff)
	}
	expectLanding(t, proxy, protected, imp.dial(t, "4", protected.addr))
	expectLanding(t, protected, proxy, b.dial(t, "4", protected.addr))
}
