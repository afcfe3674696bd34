package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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

// ErrConfig marks every configuration error.
var ErrConfig = errors.New("azure-proxy-agent: bad configuration")

// Config is /etc/azure/proxy-agent.json: upstream's keys (gpa-protocol §8)
// plus ours, which all have defaults so an upstream file works unchanged.
type Config struct {
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
}

// PollInterval returns pollKeyStatusIntervalInSeconds as a duration.
func (c *Config) PollInterval() time.Duration {
	return time.Duration(c.PollKeyStatusIntervalInSeconds) * time.Second
}

// MatcherMode resolves the matcher: ours when set, else canonical.
func (c *Config) MatcherMode() (msp.Matcher, error) { return msp.ParseMatcher(c.Matcher) }

// EndpointAddr returns the address to dial for ep, honouring overrides.
func (c *Config) EndpointAddr(ep msp.Endpoint) (netip.AddrPort, error) {
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

// LoadConfig reads and validates a config file. Unlike upstream, which
// panics at first use, every problem is returned at once, naming the file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses config JSON: a UTF-8 BOM is tolerated, unknown keys are
// ignored, upstream's required keys must be present.
func ParseConfig(data []byte) (*Config, error) {
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	var present map[string]json.RawMessage
	if err := json.Unmarshal(data, &present); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	var c Config
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

// ShippedConfig is the configuration installed with the agent, identical in
// its upstream keys to the upstream Linux package's file.
const ShippedConfig = `{
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
