package status

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func TestReadUpstreamFiles(t *testing.T) {
	type view struct {
		Version  string
		Overall  OverallState
		Derived  OverallState
		KeyLatch KeyLatchStates
		Channel  SecureChannel
		Modules  [5]msp.ModuleState
		Count    uint64
		Conns    int
		Stamp    string
	}
	tests := []struct {
		file string
		want view
	}{
		{"upstream-current.json", view{
			Version: "1.0.38", Overall: OverallSuccess, Derived: OverallSuccess,
			KeyLatch: KeyLatchStates{
				SecureChannelState: "WireServer Enforce -  IMDS Audit - HostGA Enforce",
				KeyGUID:            "0d6b4a1e-77c1-4b6e-a0a8-5d1f0d2c9e44", KeyIncarnationID: "3",
			},
			Channel: SecureChannel{Known: true, WireServer: msp.ModeEnforce, IMDS: msp.ModeAudit, HostGA: msp.ModeEnforce},
			Modules: [5]msp.ModuleState{msp.ModuleRunning, msp.ModuleRunning, msp.ModuleRunning, msp.ModuleRunning, msp.ModuleUnknown},
			Count:   12, Conns: 2, Stamp: "2026-07-22T08:15:42.907",
		}},
		{"upstream-faq-1.0.20.json", view{
			Version: "1.0.20", Overall: OverallSuccess, Derived: OverallSuccess,
			KeyLatch: KeyLatchStates{
				SecureChannelState: "Wireserver Enforce - IMDS Enforce",
				KeyGUID:            "a1b2c3d4-0000-4000-8000-000000000001", KeyIncarnationID: "1",
				WireServerRuleID: "wireserver-rule-id", IMDSRuleID: "imds-rule-id",
			},
			Channel: SecureChannel{Known: true, WireServer: msp.ModeEnforce, IMDS: msp.ModeEnforce, HostGA: msp.ModeEnforce},
			Modules: [5]msp.ModuleState{msp.ModuleRunning, msp.ModuleRunning, msp.ModuleRunning, msp.ModuleRunning, msp.ModuleRunning},
			Count:   2, Stamp: "2024-05-10T17:02:11.000",
		}},
		{"upstream-windows.json", view{
			Version: "1.0.38", Overall: OverallError, Derived: OverallError,
			KeyLatch: KeyLatchStates{SecureChannelState: "Unknown"},
			Modules:  [5]msp.ModuleState{msp.ModuleRunning, msp.ModuleRunning, msp.ModuleRunning, msp.ModuleStopped, msp.ModuleUnknown},
			Conns:    1, Stamp: "2026-07-22T08:15:42.907",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s, err := ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			a := s.ProxyAgentStatus
			ch, err := ParseSecureChannel(KeyLatchStatesFromMap(a.KeyLatchStatus.States).SecureChannelState)
			if err != nil {
				t.Fatal(err)
			}
			got := view{
				Version: a.Version, Overall: a.Status, Derived: a.Overall(),
				KeyLatch: KeyLatchStatesFromMap(a.KeyLatchStatus.States), Channel: ch,
				Modules: [5]msp.ModuleState{a.MonitorStatus.Status, a.KeyLatchStatus.Status, a.EBPFProgramStatus.Status,
					a.ProxyListenerStatus.Status, a.TelemetryLoggerStatus.Status},
				Count: a.ProxyConnectionsCount, Conns: len(s.ProxyConnectionSummary),
				Stamp: s.Timestamp.UTC().Format(TimestampLayout),
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// Re-encoding keeps what the file said, in our canonical form.
			enc, err := s.MarshalIndent()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(enc)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s, again, cmpTimestamp); diff != "" {
				t.Errorf("re-encoding lost information (-first +second):\n%s", diff)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"not json", `{"timestamp":`},
		{"bad module state", `{"proxyAgentStatus":{"keyLatchStatus":{"status":"HEALTHY","message":""}}}`},
		{"bad overall state", `{"proxyAgentStatus":{"status":"FAILED"}}`},
		{"bad timestamp", `{"timestamp":"yesterday"}`},
		{"timestamp not a string", `{"timestamp":12}`},
		{"negative count", `{"proxyAgentStatus":{"proxyConnectionsCount":-1}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse([]byte(tt.doc))
			if !errors.Is(err, ErrInvalidStatus) {
				t.Fatalf("Parse = %v, %v; want ErrInvalidStatus", s, err)
			}
		})
	}
}

func TestParseAcceptsBOMAndCase(t *testing.T) {
	doc := "\xEF\xBB\xBF" + `{"proxyAgentStatus":{"status":"success","keyLatchStatus":{"status":"Running","message":"m"}}}`
	s, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if s.ProxyAgentStatus.Status != OverallSuccess || s.ProxyAgentStatus.KeyLatchStatus.Status != msp.ModuleRunning {
		t.Errorf("got %+v", s.ProxyAgentStatus)
	}
}

func TestParseTimestamp(t *testing.T) {
	want := time.Date(2025, 4, 23, 12, 0, 0, 123_000_000, time.UTC)
	whole := want.Truncate(time.Second)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2025-04-23T12:00:00.123", want},
		{"2025-04-23T12:00:00.123Z", want},
		{"2025-04-23T14:00:00.123+02:00", want},
		{"2025-04-23T12:00:00", whole},
		{"2025-04-23T12:00:00Z", whole},
		{" 2025-04-23T12:00:00.123000000 ", want},
	}
	for _, tt := range tests {
		got, err := ParseTimestamp(tt.in)
		if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v UTC", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "2025-04-23", "23/04/2025 12:00:00", "2025-04-23T25:00:00"} {
		if _, err := ParseTimestamp(bad); !errors.Is(err, ErrInvalidStatus) {
			t.Errorf("ParseTimestamp(%q) error = %v, want ErrInvalidStatus", bad, err)
		}
	}
	b, _ := Timestamp{time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))}.MarshalJSON()
	if string(b) != `"2025-01-02T02:04:05.000"` {
		t.Errorf("MarshalJSON = %s", b)
	}
}

func TestParseSecureChannel(t *testing.T) {
	E, A, D := msp.ModeEnforce, msp.ModeAudit, msp.ModeDisabled
	tests := []struct {
		in   string
		want SecureChannel
	}{
		{"WireServer Enforce -  IMDS Enforce - HostGA Enforce", SecureChannel{Known: true, WireServer: E, IMDS: E, HostGA: E}},
		{"WireServer Audit -  IMDS Disabled - HostGA Audit", SecureChannel{Known: true, WireServer: A, IMDS: D, HostGA: A}},
		{"WireServer Disabled -  IMDS Disabled - HostGA Disabled", SecureChannel{Known: true}},
		{"Wireserver Enforce - IMDS Enforce", SecureChannel{Known: true, WireServer: E, IMDS: E, HostGA: E}},
		{"Wireserver Audit - IMDS Enforce", SecureChannel{Known: true, WireServer: A, IMDS: E, HostGA: A}},
		{"wireserver", SecureChannel{Known: true, WireServer: E, IMDS: A, HostGA: E}},
		{"wireserverandimds", SecureChannel{Known: true, WireServer: E, IMDS: E, HostGA: E}},
		{"disabled", SecureChannel{Known: true, Disabled: true}},
		{"Unknown", SecureChannel{}},
		{"", SecureChannel{}},
	}
	for _, tt := range tests {
		got, err := ParseSecureChannel(tt.in)
		if err != nil {
			t.Errorf("ParseSecureChannel(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseSecureChannel(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	for _, bad := range []string{
		"WireServer Enforce", "IMDS Enforce - HostGA Enforce", "WireServer Strict -  IMDS Enforce",
		"WireServer Enforce - WireServer Audit - IMDS Audit", "Foo Enforce - IMDS Enforce", "enabled",
	} {
		if _, err := ParseSecureChannel(bad); !errors.Is(err, ErrInvalidStatus) {
			t.Errorf("ParseSecureChannel(%q) error = %v, want ErrInvalidStatus", bad, err)
		}
	}
	// The current form round-trips byte for byte, double space included.
	c, _ := ParseSecureChannel(threeEnforce)
	if c.String() != threeEnforce || !c.Latched() {
		t.Errorf("String() = %q, Latched() = %v", c.String(), c.Latched())
	}
	for _, s := range []string{"disabled", "Unknown"} {
		if c, _ := ParseSecureChannel(s); c.Latched() || c.String() != s {
			t.Errorf("%q: Latched() = %v, String() = %q", s, c.Latched(), c.String())
		}
	}
}

func TestKeyLatchStatesMap(t *testing.T) {
	tests := []struct {
		in   KeyLatchStates
		want map[string]string
	}{
		{KeyLatchStates{}, map[string]string{
			"secureChannelState": "Unknown", "wireServerRuleId": "", "imdsRuleId": "", "hostGARuleId": "",
		}},
		{KeyLatchStates{SecureChannelState: threeEnforce, KeyGUID: "g", KeyIncarnationID: "7", IMDSRuleID: "r"}, map[string]string{
			"secureChannelState": threeEnforce, "keyGuid": "g", "keyIncarnationId": "7",
			"wireServerRuleId": "", "imdsRuleId": "r", "hostGARuleId": "",
		}},
	}
	for _, tt := range tests {
		got := tt.in.Map()
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Map() (-want +got):\n%s", diff)
		}
		want := tt.in
		if want.SecureChannelState == "" {
			want.SecureChannelState = msp.SecureChannelUnknown // Map fills it in
		}
		if diff := cmp.Diff(want, KeyLatchStatesFromMap(got)); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestTruncateMessage(t *testing.T) {
	long := strings.Repeat("é", MaxMessageChars+10)
	tests := []struct {
		name, in, want string
	}{
		{"short", "abc", "abc"},
		{"exact", strings.Repeat("x", MaxMessageChars), strings.Repeat("x", MaxMessageChars)},
		{"one over", strings.Repeat("x", MaxMessageChars+1), strings.Repeat("x", MaxMessageChars) + "..."},
		{"multibyte counts characters", long, strings.Repeat("é", MaxMessageChars) + "..."},
		{"multibyte under the limit in characters", strings.Repeat("é", MaxMessageChars), strings.Repeat("é", MaxMessageChars)},
	}
	for _, tt := range tests {
		if got := truncateMessage(tt.in); got != tt.want {
			t.Errorf("%s: got %d bytes, want %d", tt.name, len(got), len(tt.want))
		}
	}
}

func TestParseFillsMissingStates(t *testing.T) {
	s, err := Parse([]byte(`{"proxyAgentStatus":{"keyLatchStatus":{"status":"RUNNING","message":"m"},"ebpfProgramStatus":{"status":"RUNNING"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	a := s.ProxyAgentStatus
	got := []msp.ModuleState{a.MonitorStatus.Status, a.KeyLatchStatus.Status, a.EBPFProgramStatus.Status, a.ProxyListenerStatus.Status, a.TelemetryLoggerStatus.Status}
	want := []msp.ModuleState{msp.ModuleUnknown, msp.ModuleRunning, msp.ModuleRunning, msp.ModuleUnknown, msp.ModuleUnknown}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("module states (-want +got):\n%s", diff)
	}
	// The missing listener must not let the file read as healthy.
	if a.Status != OverallError {
		t.Errorf("overall = %s, want ERROR", a.Status)
	}
}

// TestUserGroupsNeverNull: upstream writes userGroups as an array always;
// a caller without groups gets [], in status.json and its compact form.
func TestUserGroupsNeverNull(t *testing.T) {
	for _, tt := range []struct {
		name   string
		groups []string
		want   string
	}{
		{"nil", nil, `"userGroups":[]`},
		{"empty", []string{}, `"userGroups":[]`},
		{"two", []string{"root", "adm"}, `"userGroups":["root","adm"]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &AggregateStatus{ProxyConnectionSummary: []ConnectionSummary{{UserName: "u", UserGroups: tt.groups}}}
			for _, marshal := range []func() ([]byte, error){st.MarshalCompact, func() ([]byte, error) { return json.Marshal(st) }} {
				b, err := marshal()
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(b), tt.want) {
					t.Errorf("%s lacks %s", b, tt.want)
				}
			}
		})
	}
}
