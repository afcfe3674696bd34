//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/msp"
)

// The agent's start-up: attach at the root of the cgroup v2 hierarchy,
// exempt itself, and protect IMDS. Not run as a test: it would redirect the
// whole machine.
func ExampleLoad() {
	ctx := context.Background()
	root, err := ebpf.CgroupV2Root()
	if err != nil {
		log.Fatal(err)
	}
	r, err := ebpf.Load(ctx, ebpf.Options{CgroupPath: root, PinPath: "/sys/fs/bpf/azure-proxy-agent"})
	if err != nil {
		// A *RequirementError or *ProgramError text includes the remediation.
		log.Fatalf("Failed to start redirector: %v", err)
	}
	defer r.Close() // also removes the exemption

	// The agent's own upstream connections must reach the host. The
	// exemption names this process by pid and start time, so a process
	// given this pid after the agent exits is redirected.
	if err := r.ExemptSelf(); err != nil {
		log.Fatal(err)
	}
	// Normally the key latch calls this (PolicyMap is its RedirectPolicy).
	if err := r.Policy().SetRedirect(ctx, []msp.Endpoint{msp.EndpointIMDS}); err != nil {
		log.Fatal(err)
	}
}

// The proxy, on each accepted connection, asks who made it; a missing
// record means the connection cannot be attributed and must be refused.
func ExampleAuditMap_LookupAndDelete() {
	var r *ebpf.Redirector // from ebpf.Load
	var conn net.Conn      // from the proxy's Accept

	client := netip.MustParseAddrPort(conn.RemoteAddr().String())
	rec, err := r.Audit().LookupAndDelete(client)
	if errors.Is(err, ebpf.ErrNotFound) {
		fmt.Println("421: caller unknown")
		return
	}
	if err != nil {
		log.Print(err)
		return
	}
	fmt.Println(rec.PID, rec.UID, rec.IsRoot(), rec.OriginalDst)
}

// The error text starts with the words the troubleshooting guide quotes,
// then says what to do.
func ExampleProgramError() {
	err := &ebpf.ProgramError{Op: ebpf.OpLoad, Program: "connect4", Err: errors.New("load program: invalid argument")}
	fmt.Println("Failed to start redirector: " + err.Error())
	// Output: Failed to start redirector: Failed to load program 'connect4' with error: load program: invalid argument; upgrade the kernel to Linux 5.15 or later
}

func ExampleCheckKernel() {
	if err := ebpf.CheckKernel(); err != nil {
		fmt.Println("this machine cannot run the MSP redirector:", err)
	}
}
