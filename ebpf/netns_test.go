//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
)

const parentNetnsEnv = "GPA_EBPF_PARENT_NETNS"

func netnsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// netnsResult is what the netns helper reports for one dial.
type netnsResult struct {
	dialResult
	Landed string `json:"landed,omitempty"` // "imds", "proxy" or ""
	Remote string `json:"remote,omitempty"` // the accepted connection's client
}

// helperNetns runs in a network namespace of its own: it refuses to go on
// unless that namespace differs from the test's, puts 169.254.169.254 on
// its loopback, listens there on port 80 (a stand-in IMDS) and on the MSP
// proxy address, and for each "<addr:port>" line dials it and reports
// which listener accepted.
func helperNetns() int {
	fail := func(format string, args ...any) int {
		fmt.Printf("error "+format+"\n", args...)
		return 1
	}
	parent, err := strconv.ParseUint(os.Getenv(parentNetnsEnv), 10, 64)
	if err != nil {
		return fail("no parent netns: %v", err)
	}
	own, err := netnsInode("/proc/self/ns/net")
	if err != nil || own == parent {
		return fail("not in a private network namespace (own %d, parent %d, %v)", own, parent, err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", msp.IMDSAddr.Addr().String() + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fail("ip %v: %v: %s", args, err, out)
		}
	}
	imds, err := net.Listen("tcp4", msp.IMDSAddr.String())
	if err != nil {
		return fail("%v", err)
	}
	proxy, err := net.Listen("tcp4", msp.ProxyAddr.String())
	if err != nil {
		return fail("%v", err)
	}
	accepted := make(chan netnsResult, 2)
	for name, ln := range map[string]net.Listener{"imds": imds, "proxy": proxy} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- netnsResult{Landed: name, Remote: c.RemoteAddr().String()}
				c.Close()
			}
		}()
	}

	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		fd, res := dialOnce("4", in.Text())
		out := netnsResult{dialResult: res}
		if res.Err == "" {
			select {
			case a := <-accepted:
				out.Landed, out.Remote = a.Landed, a.Remote
			case <-time.After(landTimeout):
			}
			syscall.Close(fd)
		}
		enc.Encode(out)
	}
	return 0
}

// TestRedirectRealIMDSAddressInNetns uses the real metadata address, safely:
// only inside a network namespace the helper created, checked before it
// dials.
func TestRedirectRealIMDSAddressInNetns(t *testing.T) {
	cg := newTestCgroup(t)
	_, err := exec.LookPath("ip")
	testenv.Require(t, "iproute2 (ip)", err)
	r := mustLoad(t, Options{CgroupPath: cg.path})
	parent, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, helperOpts{mode: "netns", cgroup: cg, netns: true,
		env: []string{parentNetnsEnv + "=" + strconv.FormatUint(parent, 10)}})

	dial := func() netnsResult {
		t.Helper()
		if _, err := fmt.Fprintln(h.stdin, msp.IMDSAddr); err != nil {
			t.Fatal(err)
		}
		line, err := h.out.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var res netnsResult
		if err := json.Unmarshal(line, &res); err != nil {
			t.Fatalf("helper said %q", line)
		}
		if res.Err != "" {
			t.Fatalf("helper: %s", res.Err)
		}
		return res
	}

	if res := dial(); res.Landed != "imds" {
		t.Fatalf("without policy the connection landed on %q, want imds", res.Landed)
	}
	if err := r.Policy().Set(msp.IMDSAddr, msp.ProxyAddr); err != nil {
		t.Fatal(err)
	}
	res := dial()
	if res.Landed != "proxy" {
		t.Fatalf("with policy the connection landed on %q, want proxy", res.Landed)
	}
	if res.Peer != msp.IMDSAddr.String() {
		t.Errorf("getpeername() = %s, want %s", res.Peer, msp.IMDSAddr)
	}
	client, err := netip.ParseAddrPort(res.Remote)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Audit().LookupAndDelete(client)
	if err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(os.Args[0])
	comm = comm[:min(len(comm), 15)] // TASK_COMM_LEN - 1
	rec = withoutGeneration(t, rec, h.pid)
	want := msp.ConnectRecord{PID: h.pid, Comm: comm, CgroupID: cg.id, OriginalDst: msp.IMDSAddr}
	if diff := cmp.Diff(want, rec, netipEqual); diff != "" {
		t.Errorf("audit record (-want +got):\n%s", diff)
	}
	if _, err := r.Audit().LookupAndDelete(client); !errors.Is(err, ErrNotFound) {
		t.Errorf("second lookup = %v, want ErrNotFound", err)
	}
}
