package agenttest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metadatasec/gpa/status"
)

// Agent is one running azure-proxy-agent process.
type Agent struct {
	// PID is the agent's process id.
	PID int
	// Started is when the process was started.
	Started time.Time

	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartAgent starts the agent binary as the service (`azure-proxy-agent -c
// CONFIG`) outside the callers' cgroup. A running agent of this Env must
// have been stopped or killed first.
func (e *Env) StartAgent(t *testing.T) *Agent {
	t.Helper()
	if e.agent != nil && e.agent.Alive() {
		t.Fatal("StartAgent: the previous agent is still running")
	}
	a := &Agent{out: &lockedBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(e.suite.agentBin, "-c", e.ConfigPath)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	// If the test binary dies without cleaning up, the agent goes with it.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.Started = time.Now()
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	a.PID = a.cmd.Process.Pid
	go func() {
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	e.agent = a
	return a
}

// StartProvisioned starts the agent and waits until `--status --wait 20`
// exits 0, failing t otherwise.
func (e *Env) StartProvisioned(t *testing.T) *Agent {
	t.Helper()
	a := e.StartAgent(t)
	if code, out := e.StatusCLI(t, 20); code != 0 {
		t.Fatalf("agent did not provision: --status exit %d %q\nagent output:\n%s", code, out, a.Output())
	}
	return a
}

// Alive reports whether the process has not exited.
func (a *Agent) Alive() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Output is everything the agent wrote to stdout and stderr.
func (a *Agent) Output() string { return a.out.String() }

// Kill sends SIGKILL and waits for the process to go.
func (a *Agent) Kill(t *testing.T) {
	t.Helper()
	if !a.stop(syscall.SIGKILL) {
		t.Fatal("agent did not die after SIGKILL")
	}
}

// Stop sends SIGTERM and waits up to 10 s, then SIGKILLs.
func (a *Agent) Stop(t *testing.T) {
	t.Helper()
	if !a.stop(syscall.SIGTERM) {
		t.Error("agent ignored SIGTERM for 10 s; killed")
	}
}

func (a *Agent) stop(sig syscall.Signal) bool {
	if !a.Alive() {
		return true
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
		return true
	case <-time.After(10 * time.Second):
	}
	a.cmd.Process.Kill()
	<-a.done
	return false
}

// Signal sends sig (SIGSTOP, SIGCONT) to the agent.
func (a *Agent) Signal(sig syscall.Signal) error { return a.cmd.Process.Signal(sig) }

// RSSKiB returns the agent's resident set size (VmRSS) in KiB.
func (a *Agent) RSSKiB() (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.PID))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", a.PID)
}

// Succeeded reports a status.json that says SUCCESS.
func Succeeded(s *status.AggregateStatus) bool {
	return s.ProxyAgentStatus.Status == status.OverallSuccess
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
