package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/metadatasec/gpa/status"
)

// Result values of a row, shared with status.Diagnose.
const (
	ok   = status.SeverityOK
	warn = status.SeverityWarn
	fail = status.SeverityFail
)

// errNotLive is what the stand-ins for live queries return when the checks
// run against a --root tree instead of this machine.
var errNotLive = errors.New("not available: --root or --os names another system")

// ErrServiceNotFound is returned by a ServiceQuerier for a service that is
// not installed.
var ErrServiceNotFound = errors.New("service not installed")

// CommandRunner runs a read-only command and returns its standard output.
// A non-zero exit is returned as an error together with the output, because
// systemctl is-active answers "inactive" with exit status 3.
type CommandRunner interface {
	Output(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ServiceStatus is what the Windows service manager reports for a service.
type ServiceStatus struct {
	// State is the state as sc query names it: RUNNING, STOPPED,
	// START_PENDING and so on.
	State string
	// StartType is AUTO_START, DEMAND_START, DISABLED and so on.
	StartType string
	// Win32ExitCode and ServiceExitCode are the exit codes of a stopped
	// service.
	Win32ExitCode, ServiceExitCode uint32
}

// ServiceQuerier reads a Windows service's state. It returns
// ErrServiceNotFound (wrapped or not) when the service is not installed.
type ServiceQuerier interface {
	QueryService(ctx context.Context, name string) (ServiceStatus, error)
}

// OSVersion is the Windows version as RtlGetVersion reports it, which is
// the true version whatever the program's manifest says.
type OSVersion struct {
	Major, Minor, Build uint32
	// Server is true for Windows Server editions (product type not
	// workstation).
	Server bool
}

// Env is everything the checks read. Every file is read through Root, so
// the same checks run on this machine (Root = os.DirFS("/")) and on fixture
// trees in tests; live queries go through the interfaces, which tests fake.
type Env struct {
	// OS selects the checks: "linux" or "windows".
	OS string
	// Root is the root file system. On Windows it is the system drive.
	Root fs.FS
	// Now is the time status.json freshness is judged against.
	Now time.Time
	// AgentAddr is the listener's host:port; empty skips the listener check.
	AgentAddr string
	// Runner runs systemctl and cloud-init (Linux).
	Runner CommandRunner
	// Services queries the Windows service manager.
	Services ServiceQuerier
	// Version reports the Windows version.
	Version func() (OSVersion, error)
}

// Validate runs every check for e.OS and returns the rows in a fixed order,
// with the root causes found among them. It only reads: files through
// e.Root, the service manager, systemctl is-active and show,
// cloud-init --version and GET /provision without the notify header, which
// would wake the agent's key latch.
func Validate(ctx context.Context, e *Env) *Report {
	if e.OS == "windows" {
		return attribute(validateWindows(ctx, e))
	}
	return attribute(validateLinux(ctx, e))
}

// worst returns the highest severity among rows.
func worst(rows []status.Finding) status.Severity {
	w := ok
	for _, r := range rows {
		w = max(w, r.Severity)
	}
	return w
}

func row(check string, sev status.Severity, action, format string, args ...any) status.Finding {
	return status.Finding{Check: check, Severity: sev, Message: fmt.Sprintf(format, args...), Action: action}
}
