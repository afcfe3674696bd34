// Package sandbox confines the demo and the privileged tests: a network
// namespace of their own with the metadata addresses on its loopback, so
// that nothing they send can leave the machine. It refuses to configure
// metadata addresses in a namespace it cannot prove is not the host's.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ErrHostNamespace is returned when the caller would touch a network
// namespace that Command did not create for it.
var ErrHostNamespace = errors.New("sandbox: not in a network namespace of our own (start through sandbox.Command)")

// EnvInNetns marks a process that Reexec started inside a fresh namespace.
const EnvInNetns = "GPA_SANDBOX_NETNS"

// envParentNetns carries the parent's namespace identity to a child that
// Command started.
const envParentNetns = "GPA_SANDBOX_PARENT_NETNS"

// InOwnNetns reports whether this process runs in a network namespace that
// Command created: it was started through Command and its namespace differs
// from the one Command ran in. Comparing with pid 1 is not enough: on some
// machines the whole session already runs in a namespace of its own, which
// is still not ours to reconfigure.
func InOwnNetns() (bool, error) {
	parent := os.Getenv(envParentNetns)
	if parent == "" {
		return false, nil
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return false, fmt.Errorf("sandbox: %w", err)
	}
	return self != parent, nil
}

// MetadataAddrs are put on the namespace's loopback.
var MetadataAddrs = []string{"169.254.169.254/32", "168.63.129.16/32"}

// SetupLoopback brings lo up in the current namespace and adds the metadata
// addresses to it. It fails with ErrHostNamespace unless InOwnNetns.
func SetupLoopback(ctx context.Context) error {
	own, err := InOwnNetns()
	if err != nil {
		return err
	}
	if !own {
		return ErrHostNamespace
	}
	cmds := [][]string{{"ip", "link", "set", "lo", "up"}}
	for _, a := range MetadataAddrs {
		cmds = append(cmds, []string{"ip", "addr", "add", a, "dev", "lo"})
	}
	for _, c := range cmds {
		out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "File exists") {
			return fmt.Errorf("sandbox: %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Command returns a command that runs argv in a new network namespace
// (unshare --net), with EnvInNetns set so the child knows. The namespace
// dies with the process: nothing is left behind.
func Command(ctx context.Context, argv ...string) (*exec.Cmd, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("sandbox: needs unshare from util-linux: %w", err)
	}
	cmd := exec.CommandContext(ctx, unshare, append([]string{"--net", "--"}, argv...)...)
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	cmd.Env = append(os.Environ(), EnvInNetns+"=1", envParentNetns+"="+self)
	return cmd, nil
}
