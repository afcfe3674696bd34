package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func readUpstreamConfig(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "upstream", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUpstreamConfigFiles: every file upstream starts with starts ours,
// deciding with the matcher upstream's canonicalRequestMode names; what we
// work around is a warning. Each row says what upstream does with the file.
func TestUpstreamConfigFiles(t *testing.T) {
	shipped := readUpstreamConfig(t, "GuestProxyAgent.linux.json")
	with := func(old, new string) string {
		if !strings.Contains(shipped, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(shipped, old, new, 1)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		json     string
		upstream string // what upstream does with the file
		matcher  msp.Matcher
		poll     time.Duration
		keys     string
		warnings []string
	}{
		{"shipped file", shipped, "Shadow: legacy decides, canonical logged", msp.MatcherShadow, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"config.rs config_struct_test", readUpstreamConfig(t, "config_struct_test.json"), "starts; no canonicalRequestMode: Off (we keep our default, canonical)", msp.MatcherCanonical, 15 * time.Second,
			filepath.Join(cwd, `C:\latchKeyFolderName`), []string{`latchKeyFolder "C:\\latchKeyFolderName" is relative`}},
		{"mode Off", with(`"Shadow"`, `"Off"`), "legacy decides", msp.MatcherLegacy, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"mode empty", with(`"Shadow"`, `""`), "legacy decides", msp.MatcherLegacy, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"mode Enforce", with(`"Shadow"`, `"Enforce"`), "canonical decides", msp.MatcherCanonical, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"mode trimmed, any case", with(`"Shadow"`, `"  eNfOrCe "`), "canonical decides", msp.MatcherCanonical, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"mode shadow lowercase", with(`"Shadow"`, `"shadow"`), "legacy decides, canonical logged", msp.MatcherShadow, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"invalid mode", with(`"Shadow"`, `"sometimes"`), "warns, runs Off", msp.MatcherLegacy, 15 * time.Second, "/var/lib/azure-proxy-agent/keys",
			[]string{`invalid canonicalRequestMode="sometimes"; defaulting to Off`}},
		{"no mode key", with(`,
    "canonicalRequestMode": "Shadow"`, ``), "Off (we keep our default, canonical)", msp.MatcherCanonical, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"our matcher key wins", with(`"logFolder"`, `"matcher": "canonical", "logFolder"`), "Shadow (our key is ours)", msp.MatcherCanonical, 15 * time.Second, "/var/lib/azure-proxy-agent/keys",
			[]string{`matcher "canonical" overrides canonicalRequestMode "Shadow"`}},
		{"poll 0", with(`"pollKeyStatusIntervalInSeconds": 15`, `"pollKeyStatusIntervalInSeconds": 0`), "starts, polls without pause", msp.MatcherShadow, 15 * time.Second, "/var/lib/azure-proxy-agent/keys",
			[]string{"pollKeyStatusIntervalInSeconds is 0"}},
		{"relative key folder", with(`"/var/lib/azure-proxy-agent/keys"`, `"keys"`), "starts, keys under the working directory", msp.MatcherShadow, 15 * time.Second, filepath.Join(cwd, "keys"),
			[]string{`latchKeyFolder "keys" is relative; using ` + filepath.Join(cwd, "keys")}},
		{"only the required keys", `{"logFolder":"/l","eventFolder":"/e","latchKeyFolder":"/k","monitorIntervalInSeconds":60,"pollKeyStatusIntervalInSeconds":5,"ebpfProgramName":"x.o"}`,
			"starts; optional keys default", msp.MatcherCanonical, 5 * time.Second, "/k", nil},
		{"UTF-8 BOM", "\ufeff" + shipped, "starts", msp.MatcherShadow, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"UTF-16LE with BOM (a Windows editor's)", utf16LE(shipped), "starts", msp.MatcherShadow, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
		{"%VAR% unset: the bare name", with(`"/var/lib/azure-proxy-agent/keys"`, `"/srv/%GPA_UNSET_FOR_TEST%/keys"`), "expands to the name", msp.MatcherShadow, 15 * time.Second, "/srv/GPA_UNSET_FOR_TEST/keys", nil},
		{"unknown log level", with(`"Trace"`, `"Verbose"`), "starts at Info", msp.MatcherShadow, 15 * time.Second, "/var/lib/azure-proxy-agent/keys", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseConfigFile([]byte(tt.json))
			if err != nil {
				t.Fatalf("upstream %s; we refuse: %v", tt.upstream, err)
			}
			cfg, err := f.Config()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Matcher != tt.matcher || cfg.PollInterval != tt.poll || cfg.KeyFolder != tt.keys {
				t.Errorf("upstream %s: got matcher %s poll %v keys %q, want %s %v %q", tt.upstream, cfg.Matcher, cfg.PollInterval, cfg.KeyFolder, tt.matcher, tt.poll, tt.keys)
			}
			if len(cfg.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings %q, want %d like %q", cfg.Warnings, len(tt.warnings), tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(cfg.Warnings[i], w) {
					t.Errorf("warning %q lacks %q", cfg.Warnings[i], w)
				}
			}
			if _, err := cfg.withDefaults(); err != nil {
				t.Errorf("New would refuse it: %v", err)
			}
		})
	}
}

func utf16LE(s string) string {
	b := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return string(b)
}

// TestShippedConfigIsUpstreams: the file we document and install is
// upstream's, key for key.
func TestShippedConfigIsUpstreams(t *testing.T) {
	a, err := ParseConfigFile([]byte(ShippedConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseConfigFile([]byte(readUpstreamConfig(t, "GuestProxyAgent.linux.json")))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b, cmp.AllowUnexported(ConfigFile{})); diff != "" {
		t.Errorf("(-ours +upstream):\n%s", diff)
	}
}
