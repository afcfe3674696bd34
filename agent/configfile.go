package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

	// Warnings lists what ParseConfigFile worked around, as upstream would
	// have run with it: the agent logs each once at start.
	Warnings []string `json:"-"`
	// canonicalSet records that canonicalRequestMode was present, even
	// empty (upstream's Off), as opposed to absent.
	canonicalSet bool
}

// PollInterval returns pollKeyStatusIntervalInSeconds as a duration;
// DefaultPollInterval for 0, which upstream would take as polling the
// host without pause.
func (c *ConfigFile) PollInterval() time.Duration {
	if c.PollKeyStatusIntervalInSeconds == 0 {
		return DefaultPollInterval
	}
	return time.Duration(c.PollKeyStatusIntervalInSeconds) * time.Second
}

// MatcherMode resolves the matcher: our matcher key when set; else
// upstream's canonicalRequestMode when present (Off or empty: legacy
// decides; Shadow: legacy decides and the canonical matcher's divergences
// are logged; Enforce: canonical decides; an unknown value is Off, as
// upstream); else canonical, our default.
func (c *ConfigFile) MatcherMode() (msp.Matcher, error) {
	if strings.TrimSpace(c.Matcher) != "" {
		return msp.ParseMatcher(c.Matcher)
	}
	if !c.canonicalSet && c.CanonicalRequestMode == "" {
		return msp.MatcherCanonical, nil
	}
	m, _ := parseCanonicalRequestMode(c.CanonicalRequestMode)
	return m, nil
}

// parseCanonicalRequestMode maps upstream's rollout flag to a matcher;
// false for a value upstream does not know (it then runs Off).
func parseCanonicalRequestMode(s string) (msp.Matcher, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "off":
		return msp.MatcherLegacy, true
	case "shadow":
		return msp.MatcherShadow, true
	case "enforce":
		return msp.MatcherCanonical, true
	}
	return msp.MatcherLegacy, false
}

// DefaultPollInterval is upstream's key-status poll interval.
const DefaultPollInterval = 15 * time.Second

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

var envVar = regexp.MustCompile(`%(\w+)%`)

// expandEnv replaces %VAR% as upstream does for the folder fields; an
// unset VAR becomes its bare name, as upstream writes it.
func expandEnv(s string) string {
	return envVar.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := os.LookupEnv(m[1 : len(m)-1]); ok {
			return v
		}
		return m[1 : len(m)-1]
	})
}

// ConfigNotFoundError is the error for a configuration file that does not
// exist; it matches ErrConfig and fs.ErrNotExist. Its text needs no
// prefix of its own: it names every place looked at and the -c flag.
type ConfigNotFoundError struct {
	// Paths are the files looked for, in order.
	Paths []string
	// Given reports that the path came from the caller (-c).
	Given bool
}

func (e *ConfigNotFoundError) Error() string {
	if e.Given || len(e.Paths) == 1 {
		return fmt.Sprintf("configuration file %s not found; give an existing file with -c", e.Paths[0])
	}
	return fmt.Sprintf("configuration file not found: looked for %s, then %s beside the binary; give another with -c", e.Paths[0], e.Paths[len(e.Paths)-1])
}

// Is makes the error match ErrConfig and fs.ErrNotExist.
func (e *ConfigNotFoundError) Is(target error) bool {
	return target == ErrConfig || target == fs.ErrNotExist
}

// LoadConfigFile reads and validates a config file. Unlike upstream, which
// panics at first use, every problem is returned at once, naming the file.
func LoadConfigFile(path string) (*ConfigFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &ConfigNotFoundError{Paths: []string{path}, Given: true}
	}
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
	paths := []string{DefaultConfigPath}
	if exe, err := os.Executable(); err == nil {
		paths = append(paths, filepath.Join(filepath.Dir(exe), "proxy-agent.json"))
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return LoadConfigFile(p)
		}
	}
	return nil, &ConfigNotFoundError{Paths: paths}
}

// ParseConfigFile parses config JSON in the encodings upstream reads
// (msp.DecodeText: UTF-8, -16 or -32, BOM or not); unknown keys are
// ignored, upstream's required keys must be present.
func ParseConfigFile(data []byte) (*ConfigFile, error) {
	data, err := msp.DecodeText(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
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
	// Upstream starts with all of the following; so do we, saying what we
	// did instead. Only what would be unsafe is refused.
	warn := func(format string, a ...any) { c.Warnings = append(c.Warnings, fmt.Sprintf(format, a...)) }
	_, hasKeys := present["latchKeyFolder"]
	switch {
	case hasKeys && strings.TrimSpace(c.LatchKeyFolder) == "":
		problems = append(problems, "latchKeyFolder is empty: the keys would be written to the working directory")
	case c.LatchKeyFolder != "" && !filepath.IsAbs(c.LatchKeyFolder):
		abs, err := filepath.Abs(c.LatchKeyFolder)
		if err != nil {
			problems = append(problems, fmt.Sprintf("latchKeyFolder %q is relative and the working directory is unknown: %v", c.LatchKeyFolder, err))
			break
		}
		warn("latchKeyFolder %q is relative; using %s (the working directory's, as upstream)", c.LatchKeyFolder, abs)
		c.LatchKeyFolder = abs
	}
	if _, ok := present["pollKeyStatusIntervalInSeconds"]; ok && c.PollKeyStatusIntervalInSeconds == 0 {
		warn("pollKeyStatusIntervalInSeconds is 0, which would poll the host without pause; using %d s", int(DefaultPollInterval/time.Second))
	}
	if c.ListenAddress == "" {
		c.ListenAddress = msp.ProxyAddr.String()
	}
	if ap, err := netip.ParseAddrPort(c.ListenAddress); err != nil || !ap.Addr().IsLoopback() {
		problems = append(problems, fmt.Sprintf("listenAddress %q must be a loopback address:port: the proxy would sign requests for other machines", c.ListenAddress))
	}
	if _, err := msp.ParseMatcher(c.Matcher); err != nil {
		problems = append(problems, err.Error())
	}
	_, c.canonicalSet = present["canonicalRequestMode"]
	if _, ok := parseCanonicalRequestMode(c.CanonicalRequestMode); !ok {
		warn("invalid canonicalRequestMode=%q; defaulting to Off (want off, shadow or enforce)", c.CanonicalRequestMode)
	}
	if m, _ := c.MatcherMode(); c.canonicalSet && strings.TrimSpace(c.Matcher) != "" {
		warn("matcher %q overrides canonicalRequestMode %q", m, c.CanonicalRequestMode)
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
  "maxActiveTcpConnections": 500,
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
		Warnings: slices.Clone(c.Warnings),
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
