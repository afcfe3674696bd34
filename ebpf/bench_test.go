//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"slices"
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
		before := processCPU()
		res := connectLoop(n, ap)
		if res == "ok" {
			res = fmt.Sprintf("ok %d", processCPU()-before)
		}
		fmt.Println(res)
	}
	return 0
}

// processCPU returns the CPU time this process has used. On loopback the
// handshake's softirq work runs in the connecting task's context, so this
// counts the whole cost of a connect() while leaving out time spent waiting
// for a CPU, which on a shared machine is most of the noise.
func processCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
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

// connectN has the helper make n connections and returns the CPU time
// the helper spent on them.
func (h *helper) connectN(b *testing.B, n int, dst netip.AddrPort) time.Duration {
	if _, err := fmt.Fprintf(h.stdin, "%d %s\n", n, dst); err != nil {
		b.Fatal(err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	ns, ok := strings.CutPrefix(strings.TrimSpace(line), "ok ")
	cpu, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		b.Fatalf("helper: %s", line)
	}
	return time.Duration(cpu)
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

// BenchmarkConnectSlowdown compares connect() with and without the programs
// attached in interleaved pairs of rounds (ABBA order, so linear drift in
// machine load cancels), each preceded by a pause and an untimed warm-up so
// the kernel's deferred teardown of the previous state does not land in
// the next measurement. It reports ns per connect() on each side, in wall
// and in CPU time, and the median per-pair slowdown in percent. The
// "control" variant loads the programs but attaches nothing: its slowdown
// is the method's noise floor. Afterwards, untimed, "attached" measures the
// time spent inside our programs per connect (BPF run-time statistics,
// enabled only for that phase). Use an explicit -benchtime count (for
// example 40000x).
func BenchmarkConnectSlowdown(b *testing.B) {
	b.Run("attached", func(b *testing.B) { connectSlowdown(b, true) })
	b.Run("control", func(b *testing.B) { connectSlowdown(b, false) })
}

func connectSlowdown(b *testing.B, attach bool) {
	cg, target, h := benchTarget(b)
	const pairs = 20
	per := max(b.N/(2*pairs), 1)

	var r *Redirector
	setAttached := func(on bool) {
		if on && r == nil {
			r = loadForBench(b, cg)
			if !attach {
				for _, l := range r.links {
					l.Close()
				}
				r.links = nil
			}
		} else if !on && r != nil {
			r.Close()
			r = nil
		}
		time.Sleep(20 * time.Millisecond)
		h.connectN(b, 100, target.addr)
	}
	defer setAttached(false)
	type sample struct{ wall, cpu time.Duration }
	timed := func(on bool) sample {
		b.StopTimer()
		setAttached(on)
		b.StartTimer()
		start := time.Now()
		cpu := h.connectN(b, per, target.addr)
		return sample{time.Since(start), cpu}
	}
	median := func(x []float64) float64 {
		slices.Sort(x)
		return (x[len(x)/2-1] + x[len(x)/2]) / 2
	}

	var detached, attached sample
	var wallRatios, cpuRatios []float64
	b.ResetTimer()
	for i := range pairs {
		var d, a sample
		if i%2 == 0 {
			d, a = timed(false), timed(true)
		} else {
			a, d = timed(true), timed(false)
		}
		detached.wall += d.wall
		detached.cpu += d.cpu
		attached.wall += a.wall
		attached.cpu += a.cpu
		wallRatios = append(wallRatios, float64(a.wall)/float64(d.wall))
		cpuRatios = append(cpuRatios, float64(a.cpu)/float64(d.cpu))
	}
	b.StopTimer()
	n := float64(per * pairs)
	dns := float64(detached.cpu.Nanoseconds()) / n
	b.ReportMetric(float64(detached.wall.Nanoseconds())/n, "wall-ns/connect-detached")
	b.ReportMetric(float64(attached.wall.Nanoseconds())/n, "wall-ns/connect-attached")
	b.ReportMetric(100*(median(wallRatios)-1), "wall-slowdown-%")
	b.ReportMetric(dns, "cpu-ns/connect-detached")
	b.ReportMetric(float64(attached.cpu.Nanoseconds())/n, "cpu-ns/connect-attached")
	b.ReportMetric(100*(median(cpuRatios)-1), "cpu-slowdown-%")
	if !attach {
		return
	}

	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Logf("BPF run-time statistics unavailable: %v", err)
		return
	}
	defer stats.Close()
	setAttached(true)
	const probe = 5000
	h.connectN(b, probe, target.addr)
	var inBPF time.Duration
	for _, a := range r.objs.attachments() {
		st, err := a.prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		inBPF += st.Runtime
	}
	bpf := float64(inBPF.Nanoseconds()) / (probe + 100)
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

// BenchmarkAuditLookupAndDelete measures the proxy's per-connection cost of
// asking who called: one record consumed per iteration.
func BenchmarkAuditLookupAndDelete(b *testing.B) {
	cg := newTestCgroup(b)
	r, err := Load(b.Context(), Options{CgroupPath: cg.path})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	rec := redirectGpaCallerRecord{Tgid: 42, Protocol: ipprotoTCP}
	const batch = 512 // below the map's LRU capacity
	for i := 0; i < b.N; i += batch {
		n := min(batch, b.N-i)
		b.StopTimer()
		for p := range n {
			key := callerKey(benchClient(p))
			if err := r.objs.GpaCallerMap.Put(&key, &rec); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for p := range n {
			if got, err := r.Audit().LookupAndDelete(benchClient(p)); err != nil || got.PID != 42 {
				b.Fatalf("LookupAndDelete = %+v, %v", got, err)
			}
		}
	}
}

func benchClient(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(40000+i))
}
