package status

import (
	"fmt"
	"strings"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// MaxStatusAge is how old status.json may be before readers call it stale.
// The agent rewrites it every 60 s; the VM extension gives up after five
// minutes, and so does Diagnose.
const MaxStatusAge = 5 * time.Minute

// maxClockSkew is how far in the future a timestamp may be before Diagnose
// suspects the guest clock rather than the agent.
const maxClockSkew = time.Minute

// maxFindingMessage bounds how much of a module message a Finding quotes, so
// a table stays readable; the full text is in status.json.
const maxFindingMessage = 200

// Severity grades one Finding.
type Severity uint8

// The severities, from healthy to broken. A troubleshooter exits non-zero
// when any Finding is SeverityFail.
const (
	SeverityOK Severity = iota
	SeverityWarn
	SeverityFail
)

// String returns "OK", "WARN" or "FAIL".
func (s Severity) String() string {
	switch s {
	case SeverityOK:
		return "OK"
	case SeverityWarn:
		return "WARN"
	case SeverityFail:
		return "FAIL"
	}
	return fmt.Sprintf("Severity(%d)", uint8(s))
}

// MarshalText renders the severity as String does, so JSON output carries
// the word and not a number.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Cause is the troubleshooting guide's reading of a module message: which of
// its known failures the agent reported.
type Cause uint8

// The causes the guide tells apart. CauseNone means the message is not a
// failure; CauseOther means it is one the guide has no specific advice for.
const (
	CauseNone Cause = iota
	CauseEBPFLoad
	CauseEBPFMissingObject
	CauseCgroupAttach
	CauseKeyAcquisition
	CauseKeyStatusUnreachable
	CauseListenerBind
	CauseMSPDisabled
	CauseOther
)

var causeNames = [...]string{
	CauseNone:                 "none",
	CauseEBPFLoad:             "ebpf-load",
	CauseEBPFMissingObject:    "ebpf-missing-object",
	CauseCgroupAttach:         "cgroup-attach",
	CauseKeyAcquisition:       "key-acquisition",
	CauseKeyStatusUnreachable: "key-status-unreachable",
	CauseListenerBind:         "listener-bind",
	CauseMSPDisabled:          "msp-disabled",
	CauseOther:                "other",
}

// String returns a short stable name such as "cgroup-attach".
func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

// ClassifyMessage maps a module message to the guide's cause. Only the
// message prefixes upstream documents as stable are matched (docs/protocol.md
// §6.2); the rest of a message embeds error renderings that change
// between versions. Matching is case-insensitive.
func ClassifyMessage(m Module, message string) Cause {
	msg := strings.ToLower(message)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(msg, s) {
				return true
			}
		}
		return false
	}
	switch m {
	case ModuleRedirector:
		switch {
		case has("file does not exist"):
			return CauseEBPFMissingObject
		// Attach is checked before load: the start-failure wrapper can
		// mention both, and a failed attach means the object loaded.
		case has("failed to attach program", "failed to open cgroup"):
			return CauseCgroupAttach
		case has("failed to load program", "failed to load hashmap", "loading ebpf api", "failed to get valid map", "failed to convert program", "btf"):
			return CauseEBPFLoad
		case has("failed", "error"):
			return CauseOther
		}
	case ModuleKeyLatch:
		switch {
		case has(stem(msp.KeyLatchMsgDisabled)):
			return CauseMSPDisabled
		case has(stem(msp.KeyLatchMsgStatusFailed)):
			return CauseKeyStatusUnreachable
		case has(stem(msp.KeyLatchMsgAcquireFailed), stem(msp.KeyLatchMsgAttestFailed), stem(msp.KeyLatchMsgCheckFailed),
			stem(msp.KeyLatchMsgSaveFailed), "rejected"):
			return CauseKeyAcquisition
		case has("failed", "error"):
			return CauseOther
		}
	case ModuleListener:
		switch {
		case has("failed to bind"):
			return CauseListenerBind
		case has("failed", "error"):
			return CauseOther
		}
	default:
		if has("failed", "error") {
			return CauseOther
		}
	}
	return CauseNone
}

// stem is the lowercase words of a key-latch message, without the
// punctuation that leads into the detail upstream appends.
func stem(msg string) string { return strings.ToLower(strings.TrimRight(msg, " -:.'")) }

// Finding is one line of a diagnosis: what was checked, how it looks, what
// was found and what the troubleshooting guide says to do about it.
type Finding struct {
	// Check names what was looked at, such as "status.keyLatchStatus".
	Check string `json:"check"`
	// Severity grades the finding.
	Severity Severity `json:"result"`
	// Message says what was found.
	Message string `json:"finding"`
	// Action is the guide's remedy; empty when there is nothing to do.
	Action string `json:"action,omitempty"`
	// Cause is the guide's reading of a module message, CauseNone for
	// findings that are not about one.
	Cause Cause `json:"-"`
}

// DiagnoseOptions configures Diagnose.
type DiagnoseOptions struct {
	// Now is the time freshness is judged against. The zero value means
	// time.Now().
	Now time.Time
	// MaxAge is how old the status may be. Zero means MaxStatusAge.
	MaxAge time.Duration
	// Windows selects the Windows advice: eBPF for Windows services instead
	// of kernel and cgroup remedies.
	Windows bool
}

// Actions the guide gives, worded for both operating systems where they
// differ.
const (
	actionKernel        = "upgrade to a kernel of version 5.15 or later with BTF (/sys/kernel/btf/vmlinux), then restart azure-proxy-agent"
	actionWinEBPF       = "make sure the eBPFCore and NetEbpfExt services are RUNNING (sc query eBPFCore), then restart the GuestProxyAgent service"
	actionMissingObject = "reinstall the azure-proxy-agent package: its eBPF object (/usr/lib/azure-proxy-agent/ebpf_cgroup.o) is missing"
	actionCgroup        = "enable cgroup v2: grubby --update-kernel=ALL --args=\"systemd.unified_cgroup_hierarchy=1\" (or add it to GRUB_CMDLINE_LINUX), then reboot"
	actionResetKey      = "reset the latched key from ARM: msp-keyreset --vm <resource id> (raises keyIncarnationId)"
	actionWireServer    = "check that 168.63.129.16 is reachable from the VM (firewall, routes); if the failure persists, reset the key with msp-keyreset"
	actionListenerBind  = "another process holds 127.0.0.1:3080: stop it and restart the agent"
	actionEnableMSP     = "nothing to do unless MSP should be on: set securityProfile.proxyAgentSettings.enabled=true on the VM"
	actionRestartLinux  = "restart the agent (systemctl restart azure-proxy-agent) and read /var/log/azure-proxy-agent/ProxyAgent.log"
	actionRestartWin    = `restart the agent (sc stop GuestProxyAgent, sc start GuestProxyAgent) and read C:\WindowsAzure\ProxyAgent\Logs\ProxyAgent.log`
	actionStaleLinux    = "the agent stopped writing its status: check systemctl status azure-proxy-agent and journalctl -u azure-proxy-agent"
	actionStaleWin      = "the agent stopped writing its status: check sc query GuestProxyAgent"
	actionClock         = "check the guest clock (time sync); status timestamps are UTC"
)

// Diagnose reads a parsed status.json the way the troubleshooting guide
// does: fresh within opts.MaxAge, proxyAgentStatus SUCCESS, the key latch,
// eBPF program and listener RUNNING, and, where a module message reports a
// failure, the guide's cause and remedy. The key latch stays RUNNING while
// it fails to get a key, so its message is read even then. The result lists
// one Finding per check in a fixed order. A nil s yields a single FAIL.
func Diagnose(s *AggregateStatus, o *DiagnoseOptions) []Finding {
	var opts DiagnoseOptions
	if o != nil {
		opts = *o
	}
	if s == nil {
		return []Finding{{Check: "status", Severity: SeverityFail, Message: "no status to diagnose", Action: pick(opts.Windows, actionStaleWin, actionStaleLinux)}}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	maxAge := opts.MaxAge
	if maxAge <= 0 {
		maxAge = MaxStatusAge
	}
	var out []Finding
	out = append(out, freshness(s, now, maxAge, opts.Windows))

	a := &s.ProxyAgentStatus
	overall := Finding{Check: "status.proxyAgentStatus", Severity: SeverityOK, Message: fmt.Sprintf("proxyAgentStatus is %s (version %s)", a.Status, orNone(a.Version))}
	if a.Status != OverallSuccess {
		overall.Severity = SeverityFail
		overall.Message = fmt.Sprintf("proxyAgentStatus is %s, not SUCCESS (version %s)", orNone(string(a.Status)), orNone(a.Version))
		overall.Action = "see the module rows below"
	}
	out = append(out, overall)

	for _, mod := range []struct {
		m  Module
		st ModuleStatus
	}{
		{ModuleKeyLatch, a.KeyLatchStatus},
		{ModuleRedirector, a.EBPFProgramStatus},
		{ModuleListener, a.ProxyListenerStatus},
	} {
		out = append(out, diagnoseModule(mod.m, mod.st, opts.Windows))
	}
	if strings.HasPrefix(a.MonitorStatus.Message, "Error writing") {
		out = append(out, Finding{Check: "status." + ModuleMonitor.FieldName(), Severity: SeverityWarn,
			Message: quote(a.MonitorStatus.Message), Action: "free space or fix permissions of the status folder"})
	}
	return out
}

func freshness(s *AggregateStatus, now time.Time, maxAge time.Duration, windows bool) Finding {
	f := Finding{Check: "status.timestamp"}
	ts := s.Timestamp.Time
	switch age := now.Sub(ts); {
	case ts.IsZero():
		f.Severity, f.Message = SeverityFail, "status.json has no timestamp"
		f.Action = pick(windows, actionStaleWin, actionStaleLinux)
	case age > maxAge:
		f.Severity = SeverityFail
		f.Message = fmt.Sprintf("status.json is stale: written %s ago (at %s UTC), more than %s", age.Truncate(time.Second), ts.UTC().Format(TimestampLayout), maxAge)
		f.Action = pick(windows, actionStaleWin, actionStaleLinux)
	case age < -maxClockSkew:
		f.Severity = SeverityWarn
		f.Message = fmt.Sprintf("status.json is dated %s in the future", (-age).Truncate(time.Second))
		f.Action = actionClock
	default:
		f.Severity = SeverityOK
		f.Message = fmt.Sprintf("written %s ago", max(age, 0).Truncate(time.Second))
	}
	return f
}

func diagnoseModule(m Module, st ModuleStatus, windows bool) Finding {
	f := Finding{Check: "status." + m.FieldName(), Cause: ClassifyMessage(m, st.Message)}
	state := st.Status
	if state == "" {
		state = msp.ModuleUnknown
	}
	f.Message = fmt.Sprintf("%s: %s", state, quote(st.Message))
	if m == ModuleKeyLatch {
		if ch := KeyLatchStatesFromMap(st.States).SecureChannelState; ch != "" {
			f.Message += fmt.Sprintf(" (secureChannelState %q)", ch)
		}
	}
	switch {
	case f.Cause == CauseMSPDisabled && state == msp.ModuleRunning:
		f.Severity = SeverityWarn
	case f.Cause == CauseNone && state == msp.ModuleRunning:
		f.Severity = SeverityOK
	default:
		f.Severity = SeverityFail
	}
	f.Action = action(f.Cause, state, windows)
	return f
}

func action(c Cause, state msp.ModuleState, windows bool) string {
	switch c {
	case CauseEBPFLoad:
		return pick(windows, actionWinEBPF, actionKernel)
	case CauseEBPFMissingObject:
		return pick(windows, actionWinEBPF, actionMissingObject)
	case CauseCgroupAttach:
		return pick(windows, actionWinEBPF, actionCgroup)
	case CauseKeyAcquisition:
		return actionResetKey
	case CauseKeyStatusUnreachable:
		return actionWireServer
	case CauseListenerBind:
		return actionListenerBind
	case CauseMSPDisabled:
		return actionEnableMSP
	case CauseNone:
		if state == msp.ModuleRunning {
			return ""
		}
	}
	return pick(windows, actionRestartWin, actionRestartLinux)
}

func pick(windows bool, win, linux string) string {
	if windows {
		return win
	}
	return linux
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// quote renders a module message for a finding, shortened so one agent
// failure cannot flood a table.
func quote(msg string) string {
	r := []rune(msg)
	if len(r) > maxFindingMessage {
		msg = string(r[:maxFindingMessage]) + "..."
	}
	return fmt.Sprintf("%q", msg)
}
