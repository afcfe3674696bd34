package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// DefaultConfigPath is where upstream and we look for the configuration.
const DefaultConfigPath = "/etc/azure/proxy-agent.json"

// ConfigFile is the configuration file, /etc/azure/proxy-agent.json:
// upstream's keys plus ours, which all have defaults so an upstream file
// works unchanged. It is defined here, once, because the agent's program,
// its demo and its tests all read and write it; Config converts it to the
// typed Config an Agent runs on.
type ConfigFile struct {
	LogFolder                      string `json:"logFolder"`
	EventFolder                    string `json:"eventFolder"`
	LatchKeyFolder                 string `json:"latchKeyFolder"`
	MonitorIntervalInSeconds       uint64 `json:"monitorIntervalInSeconds"`
	PollKeyStatusIntervalInSeconds uint64 `json:"pollKeyStatusIntervalInSeconds"`
	MaxEventFileCount              uint64 `json:"maxEventFileCount,omitempty"`
	EbpfFileFullPath               string `json:"ebpfFileFullPath,omitempty"`
	EbpfProgramName                string `json:"ebpfProgramName"`
	CgroupRoot                     string `json:"cgroupRoot,omitempty"`
	FileLogLevel                   string `json:"fileLogLevel,omitempty"`
	FileLogLevelForEvents          string `json:"fileLogLevelForEvents,omitempty"`
	FileLogLevelForSystemEvents    string `json:"fileLogLevelForSystemEvents,omitempty"`
	EnableHTTPProxyTrace           bool   `json:"enableHttpProxyTrace,omitempty"`
	CanonicalRequestMode           string `json:"canonicalRequestMode,omitempty"`

	// Ours.

	// ListenAddress is the proxy listener, 127.0.0.1:3080 by default.
	ListenAddress string `json:"listenAddress,omitempty"`
	// Matcher is canonical (default), legacy or shadow.
	Matcher string `json:"matcher,omitempty"`
	// MetricsAddress serves Prometheus metrics when set (off by default).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// BPFPinFolder, when set, pins programs and maps on a bpffs so a
	// restarting agent takes them over without a bypass window.
	BPFPinFolder string `json:"bpfPinFolder,omitempty"`
	// CgroupPath is where the programs attach; empty means the cgroup v2
	// root found in /proc/self/mountinfo.
	CgroupPath string `json:"cgroupPath,omitempty"`
	// StatusFolder holds status.json; defaults to logFolder.
	StatusFolder string `json:"statusFolder,omitempty"`
	// Endpoint overrides exist for tests only; a VM never needs them.
	WireServerAddress string `json:"wireServerAddress,omitempty"`
	HostGAAddress     string `json:"hostGAAddress,omitempty"`
	IMDSAddress       string `json:"imdsAddress,omitempty"`
	// SerialConsolePath replaces /dev/console (tests); "off" writes none.
	SerialConsolePath string `json:"serialConsolePath,omitempty"`
	// TelemetryIntervalInSeconds replaces upstream's 60 s (tests).
	TelemetryIntervalInSeconds uint64 `json:"telemetryIntervalInSeconds,omitempty"`
}

// PollInterval returns pollKeyStatusIntervalInSeconds as a duration.
func (c *ConfigFile) PollInterval() time.Duration {
	return time.Duration(c.PollKeyStatusIntervalInSeconds) * time.Second
}

// MatcherMode resolves the matcher: ours when set, else canonical.
func (c *ConfigFile) MatcherMode() (msp.Matcher, error) { return msp.ParseMatcher(c.Matcher) }

// EndpointAddr returns the address to dial for ep, honouring overrides.
func (c *ConfigFile) EndpointAddr(ep msp.Endpoint) (netip.AddrPort, error) {
	var s string
	switch ep {
	case msp.EndpointWireServer:
		s = c.WireServerAddress
	case msp.EndpointHostGA:
		s = c.HostGAAddress
	case msp.EndpointIMDS:
		s = c.IMDSAddress
	}
	if s == "" {
		return ep.AddrPort(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %s address %q: %v", ErrConfig, ep, s, err)
	}
	return ap, nil
}

var envVar = regexp.MustCompile(`%([A-Za-z_][A-Za-z0-9_]*)%`)

// expandEnv replaces %VAR% as upstream does for the folder fields.
func expandEnv(s string) string {
	return envVar.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := os.LookupEnv(m[1 : len(m)-1]); ok {
			return v
		}
		return m
	})
}

// LoadConfigFile reads and validates a config file. Unlike upstream, which
// panics at first use, every problem is returned at once, naming the file.
func LoadConfigFile(path string) (*ConfigFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := ParseConfigFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// FindConfigFile reads the configuration where upstream looks for it: path
// when given, else DefaultConfigPath, else proxy-agent.json beside the
// running binary.
func FindConfigFile(path string) (*ConfigFile, error) {
	if path != "" {
		return LoadConfigFile(path)
	}
	if _, err := os.Stat(DefaultConfigPath); err == nil {
		return LoadConfigFile(DefaultConfigPath)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "proxy-agent.json")
		if _, err := os.Stat(p); err == nil {
			return LoadConfigFile(p)
		}
	}
	return LoadConfigFile(DefaultConfigPath)
}

// ParseConfigFile parses config JSON: a UTF-8 BOM is tolerated, unknown keys are
// ignored, upstream's required keys must be present.
func ParseConfigFile(data []byte) (*ConfigFile, error) {
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	var present map[string]json.RawMessage
	if err := json.Unmarshal(data, &present); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	var c ConfigFile
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	var problems []string
	for _, k := range []string{"logFolder", "eventFolder", "latchKeyFolder", "monitorIntervalInSeconds", "pollKeyStatusIntervalInSeconds", "ebpfProgramName"} {
		if _, ok := present[k]; !ok {
			problems = append(problems, "missing required key "+k)
		}
	}
	c.LogFolder, c.EventFolder, c.LatchKeyFolder = expandEnv(c.LogFolder), expandEnv(c.EventFolder), expandEnv(c.LatchKeyFolder)
	if c.LatchKeyFolder != "" && !filepath.IsAbs(c.LatchKeyFolder) {
		problems = append(problems, "latchKeyFolder must be absolute")
	}
	if c.PollKeyStatusIntervalInSeconds == 0 {
		if _, ok := present["pollKeyStatusIntervalInSeconds"]; ok {
			problems = append(problems, "pollKeyStatusIntervalInSeconds must be at least 1")
		}
	}
	if c.ListenAddress == "" {
		c.ListenAddress = msp.ProxyAddr.String()
	}
	if ap, err := netip.ParseAddrPort(c.ListenAddress); err != nil || !ap.Addr().IsLoopback() {
		problems = append(problems, fmt.Sprintf("listenAddress %q must be a loopback address:port", c.ListenAddress))
	}
	if _, err := msp.ParseMatcher(c.Matcher); err != nil {
		problems = append(problems, err.Error())
	}
	switch strings.ToLower(strings.TrimSpace(c.CanonicalRequestMode)) {
	case "", "off", "shadow", "enforce":
	default:
		problems = append(problems, fmt.Sprintf("canonicalRequestMode %q (want off, shadow or enforce)", c.CanonicalRequestMode))
	}
	if c.StatusFolder == "" {
		c.StatusFolder = c.LogFolder
	}
	for _, ep := range msp.Endpoints {
		if _, err := c.EndpointAddr(ep); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return &c, nil
}

// ShippedConfigFile is the configuration installed with the agent, identical in
// its upstream keys to the upstream Linux package's file.
const ShippedConfigFile = `{
  "logFolder": "/var/log/azure-proxy-agent",
  "eventFolder": "/var/log/azure-proxy-agent/events",
  "latchKeyFolder": "/var/lib/azure-proxy-agent/keys",
  "monitorIntervalInSeconds": 60,
  "pollKeyStatusIntervalInSeconds": 15,
  "hostGAPluginSupport": 1,
  "ebpfProgramName": "ebpf_cgroup.o",
  "cgroupRoot": "/sys/fs/cgroup",
  "fileLogLevel": "Trace",
  "fileLogLevelForEvents": "Info",
  "fileLogLevelForSystemEvents": "Info",
  "canonicalRequestMode": "Shadow"
}
`

// Config returns the typed configuration the file describes.
func (c *ConfigFile) Config() (Config, error) {
	m, err := c.MatcherMode()
	if err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	listen, err := netip.ParseAddrPort(c.ListenAddress)
	if err != nil {
		return Config{}, fmt.Errorf("%w: listenAddress: %v", ErrConfig, err)
	}
	cfg := Config{
		ListenAddr: listen, KeyFolder: c.LatchKeyFolder, LogFolder: c.LogFolder, StatusFolder: c.StatusFolder,
		LogLevel: LogLevel(c.FileLogLevel), PollInterval: c.PollInterval(), Matcher: m,
		CgroupPath: c.CgroupPath, PinFolder: c.BPFPinFolder, MetricsAddr: c.MetricsAddress,
		EventFolder: c.EventFolder, MaxEventFileCount: int(min(c.MaxEventFileCount, 1<<20)), EventLogLevel: LogLevel(c.FileLogLevelForEvents),
		TelemetryInterval: time.Duration(c.TelemetryIntervalInSeconds) * time.Second, SerialConsole: serialConsolePath(c.SerialConsolePath),
	}
	for _, ep := range msp.Endpoints {
		a, err := c.EndpointAddr(ep)
		if err != nil {
			return Config{}, err
		}
		if a != ep.AddrPort() {
			if cfg.Endpoints == nil {
				cfg.Endpoints = map[msp.Endpoint]netip.AddrPort{}
			}
			cfg.Endpoints[ep] = a
		}
	}
	return cfg, nil
}

// LogLevel maps upstream's fileLogLevel names to a slog level; Info for
// what it does not know.
func LogLevel(s string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
