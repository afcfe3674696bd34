package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metadatasec/gpa/status"
)

// windowsStatusPath is status.WindowsStatusPath inside the system drive,
// as an fs.FS path.
var windowsStatusPath = strings.ReplaceAll(strings.TrimPrefix(status.WindowsStatusPath, `C:\`), `\`, "/")

// windowsServer2019Build is the first build of Windows Server 2019; earlier
// server builds (2016 is 14393) are not supported by MSP.
const windowsServer2019Build = 17763

const (
	actionRestartWin = `sc start GuestProxyAgent; read C:\WindowsAzure\ProxyAgent\Logs\ProxyAgent.log`
	actionPlatform   = "the platform installs it with the GPA when MSP is enabled: check the ProxyAgent extension (Microsoft.CPlat.ProxyAgent.ProxyAgentWindows) in the VM's instance view, and reapply the VM if it is missing"
	// actionEBPFServices is the guide's remedy for an eBPF setup failure.
	actionEBPFServices = "eBPF setup needs eBPFCore and NetEbpfExt RUNNING: sc query eBPFCore and sc query NetEbpfExt must show STATE: 4 RUNNING; start a stopped one with sc start eBPFCore (or NetEbpfExt), then sc stop GuestProxyAgent and sc start GuestProxyAgent; if one is not installed, " + actionPlatform
)

// windowsEBPFSetupMessages are the starts of upstream's Windows redirector
// errors that mean the eBPF for Windows runtime is missing or not running:
// the API DLL did not load, an export is missing, or the object, its maps
// or its program could not be loaded or attached. Lower case.
var windowsEBPFSetupMessages = []string{
	"failed to get ebpf api",
	"loading ebpf api from file path",
	"loading bpf api function",
	"opening bpf object from file path",
	"loading bpf object from file path",
	"failed to get bpf object",
	"failed to load program",
	"failed to attach program",
	"failed to get program",
	"failed to load hashmap",
	"failed to get valid map",
	"failed to update hashmap",
	"failed to start ebpf/redirector",
	// The wrapper of every start failure: on Windows each one is the eBPF
	// runtime's, whatever the detail after it.
	"failed to start redirector",
}

// isWindowsEBPFSetup tells whether a Windows redirector message is one of
// the eBPF setup failures.
func isWindowsEBPFSetup(msg string) bool {
	msg = strings.ToLower(msg)
	for _, m := range windowsEBPFSetupMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// windowsEBPFSetup gives an eBPF setup failure in a Windows status row the
// guide's action (the eBPF services) instead of a restart of the agent.
func windowsEBPFSetup(f status.Finding) status.Finding {
	if f.Severity != ok && f.Check == "status."+status.ModuleRedirector.FieldName() && isWindowsEBPFSetup(f.Message) {
		f.Action = actionEBPFServices
	}
	return f
}

// windowsService is one service the guide checks, with what to do when it
// is not RUNNING.
type windowsService struct {
	name, what string
}

var windowsServices = []windowsService{
	{"GuestProxyAgent", "the Guest Proxy Agent"},
	{"eBPFCore", "the eBPF for Windows core driver"},
	{"NetEbpfExt", "the eBPF for Windows network extension"},
}

func validateWindows(ctx context.Context, e *Env) []status.Finding {
	out := []status.Finding{checkWindowsVersion(e)}
	for _, s := range windowsServices {
		out = append(out, checkService(ctx, e, s))
	}
	out = append(out, checkListener(ctx, e, actionRestartWin))
	out = append(out, checkStatusFile(e, windowsStatusPath, status.WindowsStatusPath, true, windowsOffline(e))...)
	if worst(out) == fail {
		out = append(out, row("deployment", warn,
			"if a VM deployment failed, check whether its failure code is MSP-related; retry transient failures; otherwise fix the FAIL rows and redeploy",
			"the FAIL rows above can make VM deployment or extension provisioning fail"))
	}
	return out
}

// windowsOffline tells whether the checks read a Windows disk from another
// system: no service manager and no version to ask.
func windowsOffline(e *Env) bool { return e.Services == nil && e.Version == nil }

func checkWindowsVersion(e *Env) status.Finding {
	const check = "os.version"
	const action = "use Windows 10 or later, or Windows Server 2019 or later"
	if e.Version == nil {
		return row(check, warn, actionOffline+" (winver)", notChecked)
	}
	v, err := e.Version()
	if err != nil {
		return row(check, warn, "check the Windows version by hand (winver)", "cannot read the Windows version: %v", err)
	}
	kind := "Windows"
	if v.Server {
		kind = "Windows Server"
	}
	ver := fmt.Sprintf("%s %d.%d build %d", kind, v.Major, v.Minor, v.Build)
	switch {
	case v.Major < 10:
		return row(check, fail, action, "%s is not supported by MSP", ver)
	case v.Server && v.Build < windowsServer2019Build:
		return row(check, fail, action, "%s is older than Windows Server 2019 (build %d)", ver, windowsServer2019Build)
	}
	return row(check, ok, "", "%s is supported", ver)
}

func checkService(ctx context.Context, e *Env, s windowsService) status.Finding {
	check := "service." + s.name
	if e.Services == nil {
		return row(check, warn, actionOffline+" (sc query "+s.name+")", notChecked)
	}
	st, err := e.Services.QueryService(ctx, s.name)
	switch {
	case errors.Is(err, ErrServiceNotFound):
		return row(check, fail, actionPlatform, "%s (%s) is not installed", s.name, s.what)
	case err != nil:
		return row(check, warn, "run as Administrator, or run sc query "+s.name+" by hand", "cannot query %s: %v", s.name, err)
	case st.State != "RUNNING":
		msg := fmt.Sprintf("%s is %s (start type %s", s.name, st.State, st.StartType)
		if st.Win32ExitCode != 0 || st.ServiceExitCode != 0 {
			msg += fmt.Sprintf(", exit code %d, service exit code %d", st.Win32ExitCode, st.ServiceExitCode)
		}
		return row(check, fail, fmt.Sprintf("sc start %s; sc query %s must show STATE: 4 RUNNING; if it stops again, %s", s.name, s.name, actionPlatform), "%s)", msg)
	case st.StartType == "DISABLED":
		return row(check, warn, "sc config "+s.name+" start= auto", "%s is RUNNING but its start type is DISABLED: it will not start after a reboot", s.name)
	}
	return row(check, ok, "", "%s is RUNNING (start type %s)", s.name, st.StartType)
}
