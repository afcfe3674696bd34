// Command msp-demo runs the whole Metadata Security Protocol on this
// machine without touching it: a network namespace of its own with the
// metadata addresses on its loopback, a child cgroup for sample callers, a
// simulated Azure host (msptest) and the real agent (package agent). It
// shows each caller's request, the agent's decision and what the host saw,
// in Audit, then Enforce, then after a key reset, and removes everything it
// made when it ends, also on Ctrl-C.
//
//	sudo env "PATH=$PATH" go run ./examples/msp-demo [--audit-log FILE]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/metadatasec/gpa/status"
)

const usage = `usage: msp-demo [--audit-log FILE]

Runs the protocol end to end on a simulated host, as root: a network
namespace of its own (nothing leaves the machine), a child cgroup, eBPF
programs on that cgroup only, the simulated host and the real agent.
  --audit-log FILE  keep the agent's connection log, for msp-policy learn
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "--help", "help":
			fmt.Fprint(stdout, usage)
			return 0
		case demoCallerCommand:
			return runDemoCaller(ctx, args[1:], stdout, stderr)
		}
	}
	return runDemo(ctx, args, stdout, stderr)
}

// summarizeStatus prints the lines of status.json a reader of the demo
// wants: the overall status, the key, the modes and the request counts.
func summarizeStatus(w io.Writer, b []byte) error {
	var s status.AggregateStatus
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("status.json: %w", err)
	}
	a := s.ProxyAgentStatus
	k := a.KeyLatchStatus.States
	failed := uint64(0)
	for _, c := range s.FailedAuthenticateSummary {
		failed += c.Count
	}
	fmt.Fprintf(w, "   status %s (key latch %s, eBPF %s, listener %s)\n", a.Status, a.KeyLatchStatus.Status, a.EBPFProgramStatus.Status, a.ProxyListenerStatus.Status)
	fmt.Fprintf(w, "   key %s, keyIncarnationId %s\n", k[status.StateKeyKeyGUID], k[status.StateKeyKeyIncarnation])
	fmt.Fprintf(w, "   modes %s\n", k[status.StateKeySecureChannel])
	fmt.Fprintf(w, "   %d requests, %d in the failed-authorization summary\n", a.ProxyConnectionsCount, failed)
	return nil
}
