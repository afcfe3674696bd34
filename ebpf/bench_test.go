//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// helperBench prints "ready <pid>", then for every "<n> <addr:port>" line
// makes n TCP connections to addr (socket, connect, close with an RST so no
// TIME_WAIT piles up) and answers "ok" or the first error.
func helperBench() int {
	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		ns, addr, _ := strings.Cut(in.Text(), " ")
		n, err := strconv.Atoi(ns)
		if err != nil {
			fmt.Println(err)
			continue
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(connectLoop(n, ap))
	}
	return 0
}

func connectLoop(n int, ap netip.AddrPort) string {
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err.Error()
		}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger); err != nil {
			unix.Close(fd)
			return err.Error()
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return err.Error()
		}
		unix.Close(fd)
	}
	return "ok"
}

// benchTarget starts a loopback listener that closes whatever it accepts,
// and a connecting helper in a fresh child cgroup.
func benchTarget(b *testing.B) (*testCgroup, *listener, *helper) {
	cg := newTestCgroup(b)
	target := listen(b, "127.0.0.1:0")
	go func() {
		for c := range target.conns {
			c.Close()
		}
	}()
	return cg, target, startHelper(b, helperOpts{mode: "bench", cgroup: cg})
}

func (h *helper) connectN(b *testing.B, n int, dst netip.AddrPort) {
	if _, err := fmt.Fprintf(h.stdin, "%d %s\n", n, dst); err != nil {
		b.Fatal(err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	if strings.TrimSpace(line) != "ok" {
		b.Fatalf("helper: %s", line)
	}
}

func loadForBench(b *testing.B, cg *testCgroup) *Redirector {
	r, err := Load(b.Context(), Options{CgroupPath: cg.path})
	if err != nil {
		b.Fatal(err)
	}
	for _, ep := range []string{"168.63.129.16:80", "169.254.169.254:80", "168.63.129.16:32526"} {
		if err := r.Policy().Set(netip.MustParseAddrPort(ep), netip.MustParseAddrPort("127.0.0.1:3080")); err != nil {
			r.Close()
			b.Fatal(err)
		}
	}
	return r
}

// BenchmarkConnectSlowdown alternates rounds with and without the programs
// attached, so drift in machine load hits both sides alike, and reports ns
// per connect() for each and the slowdown in percent. On a busy machine
// that difference is dominated by noise, so it also reports the time the
// kernel spent inside our programs per connect (BPF run-time statistics,
// enabled only for the benchmark's duration) and that as a share of a
// detached connect: a noise-free upper bound on what the programs cost.
// Use -benchtime with an explicit count (for example 40000x).
func BenchmarkConnectSlowdown(b *testing.B) {
	cg, target, h := benchTarget(b)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enable BPF run-time statistics: %v", err)
	}
	defer stats.Close()

	const rounds = 20
	per := max(b.N/(2*rounds), 1)
	var detached, attached, inBPF time.Duration
	b.ResetTimer()
	for i := range 2 * rounds {
		if i%2 == 0 {
			start := time.Now()
			h.connectN(b, per, target.addr)
			detached += time.Since(start)
			continue
		}
		b.StopTimer()
		r := loadForBench(b, cg)
		b.StartTimer()
		start := time.Now()
		h.connectN(b, per, target.addr)
		attached += time.Since(start)
		b.StopTimer()
		for _, p := range r.progs {
			st, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			inBPF += st.Runtime
		}
		r.Close()
		b.StartTimer()
	}
	n := float64(per * rounds)
	dns, ans := float64(detached.Nanoseconds())/n, float64(attached.Nanoseconds())/n
	bpf := float64(inBPF.Nanoseconds()) / n
	b.ReportMetric(dns, "ns/connect-detached")
	b.ReportMetric(ans, "ns/connect-attached")
	b.ReportMetric(100*(ans-dns)/dns, "slowdown-%")
	b.ReportMetric(bpf, "bpf-ns/connect")
	b.ReportMetric(100*bpf/dns, "bpf-share-%")
}

// BenchmarkConnect measures connect() to a loopback destination that is
// not protected, from a process in a child cgroup, with and without the
// programs attached to that cgroup. The policy holds the three MSP entries
// so the lookup is a realistic miss.
func BenchmarkConnect(b *testing.B) {
	cg, target, h := benchTarget(b)
	b.Run("detached", func(b *testing.B) { h.connectN(b, b.N, target.addr) })
	b.Run("attached", func(b *testing.B) {
		r := loadForBench(b, cg)
		defer r.Close()
		b.ResetTimer()
		h.connectN(b, b.N, target.addr)
	})
}
