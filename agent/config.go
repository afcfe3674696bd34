package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// ErrConfig marks every error New returns for an unusable Config.
var ErrConfig = errors.New("agent: bad configuration")

// File names the agent writes in Config.LogFolder and Config.StatusFolder,
// upstream's names.
const (
	AgentLogName      = "ProxyAgent.log"
	ConnectionLogName = "ProxyAgent.Connection.log"
	StatusFileName    = "status.json"
)

// Config is what the agent needs to know, in Go's types. Programs that read
// upstream's /etc/azure/proxy-agent.json convert it to a Config (the
// azure-proxy-agent example does); embedders fill it in directly. Only
// KeyFolder is required.
type Config struct {
	// ListenAddr is the proxy listener, a loopback address; msp.ProxyAddr
	// (127.0.0.1:3080) when zero. The eBPF programs redirect callers here.
	ListenAddr netip.AddrPort
	// KeyFolder holds the latched keys and the local rules folder
	// (upstream's latchKeyFolder). It must be absolute.
	KeyFolder string
	// LogFolder receives ProxyAgent.log and ProxyAgent.Connection.log,
	// rotated as upstream does. Empty writes no log files.
	LogFolder string
	// StatusFolder receives status.json; LogFolder when empty; no
	// status.json when both are empty.
	StatusFolder string
	// LogLevel is the least level written to ProxyAgent.log and to
	// Options.Logger; Info when zero.
	LogLevel slog.Level

	// PollInterval is how often the key status is polled
	// (pollKeyStatusIntervalInSeconds); 15 s when zero.
	PollInterval time.Duration
	// ProvisionTimeout bounds provisioning (status.DefaultProvisionTimeout,
	// 120 s, when zero).
	ProvisionTimeout time.Duration
	// Matcher chooses how request targets are matched against the rules.
	// With msp.MatcherShadow legacy decides, as in upstream's Shadow, and
	// the canonical matcher's divergences are logged.
	Matcher msp.Matcher

	// NoRedirect runs without eBPF: the redirector is reported STOPPED and
	// no caller can be attributed, as on a kernel without support.
	NoRedirect bool
	// CgroupPath is where the eBPF programs attach; the cgroup v2 root found
	// in /proc/self/mountinfo when empty. Tests and demos set a child cgroup
	// of their own: attaching at the root redirects the whole machine.
	CgroupPath string
	// PinFolder, on a bpffs, pins programs and maps so that a restarting
	// agent takes them over without a window in which callers bypass it.
	// Empty: the programs are detached when Run returns.
	PinFolder string

	// Endpoints maps a host endpoint to the address the agent dials for it
	// instead of the real one. Tests only: a VM never needs it.
	Endpoints map[msp.Endpoint]netip.AddrPort
	// MetricsAddr, when set, serves the Prometheus series at /metrics there.
	MetricsAddr string
	// Version is reported in status.json and the start-up log line.
	Version string

	// EventFolder holds upstream's telemetry event files (eventFolder):
	// events wait there when they cannot be queued for sending. Empty
	// drops such events instead.
	EventFolder string
	// MaxEventFileCount bounds the files in EventFolder
	// (maxEventFileCount); upstream's 30 when zero.
	MaxEventFileCount int
	// EventLogLevel is the least level of the log records also sent as
	// telemetry events (fileLogLevelForEvents); Info when zero.
	EventLogLevel slog.Level
	// TelemetryInterval is how often queued events are sent; upstream's
	// 60 s when zero. Tests shorten it.
	TelemetryInterval time.Duration
	// SerialConsole receives upstream's start-up and "Provision finished"
	// lines; none when empty. ConfigFile.Config sets DefaultSerialConsole,
	// as upstream writes there.
	SerialConsole string
	// Warnings are configuration problems worked around before New (see
	// ConfigFile.Warnings); Run logs each once at start.
	Warnings []string
}

// withDefaults checks c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	var problems []error
	if !c.ListenAddr.IsValid() {
		c.ListenAddr = msp.ProxyAddr
	}
	if !c.ListenAddr.Addr().IsLoopback() {
		problems = append(problems, fmt.Errorf("ListenAddr %s is not a loopback address", c.ListenAddr))
	}
	if c.ListenAddr.Port() == 0 {
		// The eBPF programs redirect to a fixed port, and Ready reports it.
		problems = append(problems, fmt.Errorf("ListenAddr %s has no port", c.ListenAddr))
	}
	switch {
	case c.KeyFolder == "":
		problems = append(problems, errors.New("KeyFolder is required"))
	case !filepath.IsAbs(c.KeyFolder):
		problems = append(problems, fmt.Errorf("KeyFolder %q is not absolute", c.KeyFolder))
	}
	if c.StatusFolder == "" {
		c.StatusFolder = c.LogFolder
	}
	for ep, a := range c.Endpoints {
		if !a.IsValid() {
			problems = append(problems, fmt.Errorf("endpoint override for %s is not an address", ep))
		}
	}
	if c.Version == "" {
		c.Version = "0.0.0-embedded"
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("%w: %w", ErrConfig, errors.Join(problems...))
	}
	return c, nil
}

// endpointAddr is the address to dial for ep.
func (c *Config) endpointAddr(ep msp.Endpoint) netip.AddrPort {
	if a, ok := c.Endpoints[ep]; ok {
		return a
	}
	return ep.AddrPort()
}
