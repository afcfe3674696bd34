//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/testenv"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the subprocess that connects from inside the
// test cgroup, so the test's own process never joins it.
const helperEnv = "GPA_EBPF_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "dial":
		os.Exit(helperDial())
	case "bench":
		os.Exit(helperBench())
	case "netns":
		os.Exit(helperNetns())
	case "agent":
		os.Exit(helperAgent())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode")
		os.Exit(2)
	}
}

// Where the agent helper loads and pins.
const (
	agentCgroupEnv = "GPA_EBPF_AGENT_CGROUP"
	agentPinEnv    = "GPA_EBPF_AGENT_PIN"
)

// helperAgent starts as the agent does: it loads with pins (taking over
// what an earlier helper left), exempts itself, then serves dial commands
// like helperDial. SIGTERM is a clean stop: Close, which removes the
// exemption, then exit 0.
func helperAgent() int {
	r, err := Load(context.Background(), Options{CgroupPath: os.Getenv(agentCgroupEnv), PinPath: os.Getenv(agentPinEnv)})
	if err != nil {
		fmt.Printf("error load: %v\n", err)
		return 1
	}
	if err := r.ExemptSelf(); err != nil {
		fmt.Printf("error exempt: %v\n", err)
		return 1
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		if err := r.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}()
	return helperDial()
}

// dialResult is what the dial helper reports for one connect().
type dialResult struct {
	Err   string `json:"err,omitempty"`
	Peer  string `json:"peer,omitempty"`  // getpeername()
	Local string `json:"local,omitempty"` // getsockname()
}

// helperDial prints "ready <pid>", and for every line read from stdin
// ("<family> <addr:port>") connects with raw syscalls (so the socket family
// is exactly the one asked for), reports getpeername/getsockname as one JSON
// line, and keeps the socket open until the next command or EOF.
func helperDial() int {
	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	held := -1
	for in.Scan() {
		if held >= 0 {
			unix.Close(held)
			held = -1
		}
		if in.Text() == "exec" {
			// Become a new program image of the same process; the
			// new image says "ready <pid>" again and reads on.
			exe, err := os.Executable()
			if err == nil {
				err = syscall.Exec(exe, []string{exe}, os.Environ())
			}
			fmt.Printf("error exec: %v\n", err)
			return 1
		}
		fam, addr, _ := strings.Cut(in.Text(), " ")
		fd, res := dialOnce(fam, addr)
		held = fd
		enc.Encode(res)
	}
	return 0
}

func dialOnce(fam, addr string) (int, dialResult) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, dialResult{Err: err.Error()}
	}
	var (
		fd int
		sa unix.Sockaddr
	)
	if fam == "6" || fam == "6tfo" {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	} else {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	if err != nil {
		return -1, dialResult{Err: "socket: " + err.Error()}
	}
	if strings.HasSuffix(fam, "tfo") {
		// TCP Fast Open connects inside sendto(); it must not be a
		// way around the connect hooks.
		if err := unix.Sendto(fd, []byte("x"), unix.MSG_FASTOPEN, sa); err != nil {
			unix.Close(fd)
			return -1, dialResult{Err: "sendto(MSG_FASTOPEN): " + err.Error()}
		}
	} else if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, dialResult{Err: "connect: " + err.Error()}
	}
	var res dialResult
	if p, err := unix.Getpeername(fd); err != nil {
		res.Err = "getpeername: " + err.Error()
	} else {
		res.Peer = sockaddrString(p)
	}
	if l, err := unix.Getsockname(fd); err == nil {
		res.Local = sockaddrString(l)
	}
	return fd, res
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

// testCgroup is a child cgroup created for one test. Programs attach here,
// never to the root of the hierarchy.
type testCgroup struct {
	path string
	fd   *os.File
	id   uint64
}

func newTestCgroup(t testing.TB) *testCgroup {
	t.Helper()
	testenv.MustBeRoot(t)
	root, err := CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	var rnd [4]byte
	rand.Read(rnd[:])
	dir := filepath.Join(root, fmt.Sprintf("gpa-ebpf-test-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:])))
	if filepath.Clean(dir) == filepath.Clean(root) || filepath.Dir(dir) != filepath.Clean(root) {
		t.Fatalf("refusing to use %s as a test cgroup (root %s)", dir, root)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		testenv.Require(t, "permission to create a child cgroup", err)
	}
	f, id, err := openCgroup(dir)
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		// Helpers may still be exiting; the directory can be removed
		// once the cgroup has no processes.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove test cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return &testCgroup{path: dir, fd: f, id: id}
}

// exeFor returns a copy of the test binary that uid can execute: go test
// builds into a directory only root may enter.
func exeFor(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpa-ebpf-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "gpa-ebpf-helper")
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// helper is a running helper subprocess.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	pid   uint32
}

type helperOpts struct {
	mode   string      // "dial", "bench", "netns" or "agent"
	cgroup *testCgroup // nil: stay in the test's cgroup
	cred   *syscall.Credential
	exe    string // binary to run; os.Args[0] if empty
	env    []string
	netns  bool // start in a new network namespace
}

func startHelper(t testing.TB, o helperOpts) *helper {
	t.Helper()
	exe := o.exe
	if exe == "" {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe)
	cmd.Dir = "/"
	// Under -race a helper sleeps a second at exit unless told not to.
	cmd.Env = append([]string{helperEnv + "=" + o.mode, "PATH=/usr/bin:/bin", "GORACE=atexit_sleep_ms=0"}, o.env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred, Pdeathsig: syscall.SIGKILL}
	if o.netns {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	if o.cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(o.cgroup.fd.Fd())
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(h.stop)
	h.ready(t)
	return h
}

// ready waits for the helper's "ready <pid>" line.
func (h *helper) ready(t testing.TB) {
	t.Helper()
	line, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("helper did not start: %v", err)
	}
	pid, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(line), "ready "), 10, 32)
	if err != nil || int(pid) != h.cmd.Process.Pid {
		t.Fatalf("helper said %q, pid %d", line, h.cmd.Process.Pid)
	}
	h.pid = uint32(pid)
}

// exec makes a dial helper exec itself: same process, new program image.
func (h *helper) exec(t testing.TB) {
	t.Helper()
	if _, err := fmt.Fprintln(h.stdin, "exec"); err != nil {
		t.Fatal(err)
	}
	h.ready(t)
}

// dial asks the helper to connect to dst over AF_INET (family "4") or
// AF_INET6 ("6"); with a "tfo" suffix it connects by sendto(MSG_FASTOPEN).
func (h *helper) dial(t testing.TB, family string, dst netip.AddrPort) dialResult {
	t.Helper()
	if _, err := fmt.Fprintf(h.stdin, "%s %s\n", family, dst); err != nil {
		t.Fatal(err)
	}
	line, err := h.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var res dialResult
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	return res
}

func (h *helper) stop() {
	h.stdin.Close()
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
}

// listener accepts on a loopback address and hands connections to the
// test.
type listener struct {
	ln    net.Listener
	addr  netip.AddrPort
	conns chan net.Conn
}

func listen(t testing.TB, addr string) *listener {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String()), conns: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(l.conns)
				return
			}
			l.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range l.conns {
			c.Close()
		}
	})
	return l
}

// accepted waits for the next connection; nil after the timeout.
func (l *listener) accepted(timeout time.Duration) net.Conn {
	select {
	case c := <-l.conns:
		return c
	case <-time.After(timeout):
		return nil
	}
}
