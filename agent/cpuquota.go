package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Upstream's service and the share of one CPU it is limited to once
// provisioning has finished.
const (
	ServiceUnit = "azure-proxy-agent.service"
	CPUQuota    = "15%"
)

// RunCommand runs an external command; Options.RunCommand replaces it in
// tests.
type RunCommand func(ctx context.Context, name string, args ...string) error

func runCommand(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// systemdUnit decides whether this process is the azure-proxy-agent
// service under systemd: systemd started it (INVOCATION_ID or
// NOTIFY_SOCKET), systemd runs the machine (/run/systemd/system) and the
// process's cgroup (procCgroup, /proc/self/cgroup's content) is the
// service's. It returns why not otherwise. The last check keeps an agent
// started from some other unit (a test run, a shell in a session) from
// limiting that unit.
func systemdUnit(getenv func(string) string, systemdRunning bool, procCgroup string) (ok bool, why string) {
	if getenv("INVOCATION_ID") == "" && getenv("NOTIFY_SOCKET") == "" {
		return false, "not started by systemd (no INVOCATION_ID or NOTIFY_SOCKET)"
	}
	if !systemdRunning {
		return false, "systemd is not running (no /run/systemd/system)"
	}
	for line := range strings.Lines(procCgroup) {
		// "0::/system.slice/azure-proxy-agent.service" (v2) or
		// "1:name=systemd:/system.slice/azure-proxy-agent.service" (v1).
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && (parts[1] == "" || parts[1] == "name=systemd") &&
			(strings.HasSuffix(parts[2], "/"+ServiceUnit) || strings.Contains(parts[2], "/"+ServiceUnit+"/")) {
			return true, ""
		}
	}
	return false, "not running as " + ServiceUnit
}

// setCPUQuota limits the service as upstream does after provisioning:
// systemctl set-property azure-proxy-agent.service CPUQuota=15%. Outside
// the service under systemd it only logs why it skipped.
func setCPUQuota(ctx context.Context, run RunCommand, logger *slog.Logger) {
	_, err := os.Stat("/run/systemd/system")
	cg, _ := os.ReadFile("/proc/self/cgroup")
	if ok, why := systemdUnit(os.Getenv, err == nil, string(cg)); !ok {
		logger.Info("CPU quota not set: " + why)
		return
	}
	applyCPUQuota(ctx, run, logger)
}

func applyCPUQuota(ctx context.Context, run RunCommand, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := run(ctx, "systemctl", "set-property", ServiceUnit, "CPUQuota="+CPUQuota); err != nil {
		logger.Error(fmt.Sprintf("Failed to set %s CPU quota with error: %v", ServiceUnit, err))
		return
	}
	logger.Warn(fmt.Sprintf("Successfully set %s CPU quota to %s", ServiceUnit, CPUQuota))
}
