//go:build linux

package ebpf

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

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

// BenchmarkConnect measures connect() to a loopback destination that is
// not protected, from a process in a child cgroup, with and without the
// programs attached to that cgroup. The policy holds the three MSP entries
// so the lookup is a realistic miss.
func BenchmarkConnect(b *testing.B) {
	cg := newTestCgroup(b)
	target := listen(b, "127.0.0.1:0")
	go func() {
		// Drain: accepted connections are closed at once.
		for c := range target.conns {
			c.Close()
		}
	}()
	h := startHelper(b, helperOpts{mode: "bench", cgroup: cg})
	run := func(b *testing.B) {
		if _, err := fmt.Fprintf(h.stdin, "%d %s\n", b.N, target.addr); err != nil {
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
	b.Run("detached", run)
	b.Run("attached", func(b *testing.B) {
		r, err := Load(b.Context(), Options{CgroupPath: cg.path})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		for _, ep := range []string{"168.63.129.16:80", "169.254.169.254:80", "168.63.129.16:32526"} {
			if err := r.Policy().Set(netip.MustParseAddrPort(ep), netip.MustParseAddrPort("127.0.0.1:3080")); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		run(b)
	})
}
