package agent

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/metadatasec/gpa/msp"
)

func TestParseShippedConfigFile(t *testing.T) {
	c, err := ParseConfigFile([]byte("\xEF\xBB\xBF" + ShippedConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	want := &ConfigFile{
		LogFolder: "/var/log/azure-proxy-agent", EventFolder: "/var/log/azure-proxy-agent/events",
		LatchKeyFolder: "/var/lib/azure-proxy-agent/keys", MonitorIntervalInSeconds: 60, PollKeyStatusIntervalInSeconds: 15,
		EbpfProgramName: "ebpf_cgroup.o", CgroupRoot: "/sys/fs/cgroup", FileLogLevel: "Trace", FileLogLevelForEvents: "Info",
		FileLogLevelForSystemEvents: "Info", CanonicalRequestMode: "Shadow",
		ListenAddress: "127.0.0.1:3080", StatusFolder: "/var/log/azure-proxy-agent",
	}
	if diff := cmp.Diff(want, c, cmpopts.IgnoreUnexported(ConfigFile{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// The shipped file says canonicalRequestMode Shadow: legacy decides.
	if m, _ := c.MatcherMode(); m != msp.MatcherShadow {
		t.Errorf("matcher = %v", m)
	}
	if ap, _ := c.EndpointAddr(msp.EndpointIMDS); ap != msp.IMDSAddr {
		t.Errorf("imds = %v", ap)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, json string
		want       []string
	}{
		{"not json", `{`, []string{"unexpected end"}},
		{"missing keys", `{"logFolder":"/l"}`, []string{"missing required key eventFolder", "missing required key latchKeyFolder", "missing required key ebpfProgramName"}},
		{"wrong type", strings.Replace(ShippedConfigFile, `15`, `"15"`, 1), []string{"cannot unmarshal"}},
		{"bad listen", strings.Replace(ShippedConfigFile, `"logFolder"`, `"listenAddress":"0.0.0.0:3080","logFolder"`, 1), []string{"must be a loopback"}},
		{"bad matcher", strings.Replace(ShippedConfigFile, `"logFolder"`, `"matcher":"fuzzy","logFolder"`, 1), []string{"unknown matcher"}},
		{"bad override", strings.Replace(ShippedConfigFile, `"logFolder"`, `"imdsAddress":"nowhere","logFolder"`, 1), []string{"imds address"}},
		{"empty keys folder", strings.Replace(ShippedConfigFile, `"/var/lib/azure-proxy-agent/keys"`, `" "`, 1), []string{"latchKeyFolder is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfigFile([]byte(tt.json))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.json")
	_, err := LoadConfigFile(missing)
	if !errors.Is(err, ErrConfig) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if want := "configuration file " + missing + " not found; give an existing file with -c"; err == nil || err.Error() != want {
		t.Errorf("missing file message %q, want %q", err, want)
	}
	t.Setenv("GPA_TEST_ROOT", "/srv/gpa")
	p := filepath.Join(dir, "c.json")
	cfg := strings.Replace(ShippedConfigFile, `"/var/lib/azure-proxy-agent/keys"`, `"%GPA_TEST_ROOT%/keys"`, 1)
	cfg = strings.Replace(cfg, `"logFolder"`, `"someFutureKey": true, "logFolder"`, 1)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.LatchKeyFolder != "/srv/gpa/keys" {
		t.Errorf("latchKeyFolder = %q, want %%VAR%% expanded", c.LatchKeyFolder)
	}
}

// TestConfigFromFile: the shipped file gives the typed Config the service
// runs on, overrides and log level included.
func TestConfigFromFile(t *testing.T) {
	f, err := ParseConfigFile([]byte(strings.Replace(ShippedConfigFile, `"logFolder"`, `"imdsAddress":"127.0.0.1:9000","matcher":"legacy","bpfPinFolder":"/sys/fs/bpf/gpa","logFolder"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr: msp.ProxyAddr, KeyFolder: "/var/lib/azure-proxy-agent/keys",
		LogFolder: "/var/log/azure-proxy-agent", StatusFolder: "/var/log/azure-proxy-agent",
		LogLevel: slog.LevelDebug, PollInterval: 15 * time.Second, Matcher: msp.MatcherLegacy,
		PinFolder: "/sys/fs/bpf/gpa", EventFolder: "/var/log/azure-proxy-agent/events", SerialConsole: DefaultSerialConsole,
		Endpoints: map[msp.Endpoint]netip.AddrPort{msp.EndpointIMDS: netip.MustParseAddrPort("127.0.0.1:9000")},
		Warnings:  []string{`matcher "legacy" overrides canonicalRequestMode "Shadow"`},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"Trace": slog.LevelDebug, "debug": slog.LevelDebug, "Info": slog.LevelInfo,
		" WARN ": slog.LevelWarn, "Warning": slog.LevelWarn, "Error": slog.LevelError, "": slog.LevelInfo, "verbose": slog.LevelInfo} {
		if got := LogLevel(in); got != want {
			t.Errorf("LogLevel(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestConfigNotFoundMessage: one message, "not found", naming every place
// looked at and -c; it matches ErrConfig and fs.ErrNotExist.
func TestConfigNotFoundMessage(t *testing.T) {
	tests := []struct {
		err  *ConfigNotFoundError
		want string
	}{
		{&ConfigNotFoundError{Paths: []string{DefaultConfigPath, "/usr/sbin/proxy-agent.json"}},
			"configuration file not found: looked for /etc/azure/proxy-agent.json, then /usr/sbin/proxy-agent.json beside the binary; give another with -c"},
		{&ConfigNotFoundError{Paths: []string{"/x.json"}, Given: true}, "configuration file /x.json not found; give an existing file with -c"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%q, want %q", got, tt.want)
		}
		if !errors.Is(tt.err, ErrConfig) || !errors.Is(tt.err, fs.ErrNotExist) {
			t.Errorf("%v does not match ErrConfig and fs.ErrNotExist", tt.err)
		}
	}
}
