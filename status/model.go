package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// OverallState is proxyAgentStatus.status.
type OverallState string

// The overall states. Upstream has an UNKNOWN variant it never produces; the
// reader accepts it so such a file still parses.
const (
	OverallSuccess OverallState = "SUCCESS"
	OverallError   OverallState = "ERROR"
	OverallUnknown OverallState = "UNKNOWN"
)

// UnmarshalText accepts the overall states in any letter case and rejects
// anything else with ErrInvalidStatus.
func (s *OverallState) UnmarshalText(b []byte) error {
	switch v := OverallState(strings.ToUpper(strings.TrimSpace(string(b)))); v {
	case OverallSuccess, OverallError, OverallUnknown:
		*s = v
		return nil
	}
	return fmt.Errorf("%w: overall state %q", ErrInvalidStatus, b)
}

// ModuleStatus is one module's entry in proxyAgentStatus.
type ModuleStatus struct {
	// Status is the module's state.
	Status msp.ModuleState `json:"status"`
	// Message is the module's last message, at most MaxMessageChars
	// characters plus "...".
	Message string `json:"message"`
	// States carries free-form key/value details. Only keyLatchStatus has
	// it; see KeyLatchStates for the keys.
	States map[string]string `json:"states,omitempty"`
}

// AgentStatus is the proxyAgentStatus object.
type AgentStatus struct {
	// Version is the agent's version; the VM extension compares it with
	// its own.
	Version string `json:"version"`
	// Status is Overall() at the time of writing.
	Status OverallState `json:"status"`
	// MonitorStatus reports the status writer itself: always RUNNING, with
	// the result of the previous write as its message.
	MonitorStatus ModuleStatus `json:"monitorStatus"`
	// KeyLatchStatus is the key latch; the only module with States.
	KeyLatchStatus ModuleStatus `json:"keyLatchStatus"`
	// EBPFProgramStatus is the redirector. A load failure leaves it UNKNOWN.
	EBPFProgramStatus ModuleStatus `json:"ebpfProgramStatus"`
	// ProxyListenerStatus is the listener on 127.0.0.1:3080.
	ProxyListenerStatus ModuleStatus `json:"proxyListenerStatus"`
	// TelemetryLoggerStatus is the telemetry logger; upstream never sets
	// its state, so it stays UNKNOWN there.
	TelemetryLoggerStatus ModuleStatus `json:"telemetryLoggerStatus"`
	// ProxyConnectionsCount counts every HTTP request the listener received,
	// including the ones the agent answered itself.
	ProxyConnectionsCount uint64 `json:"proxyConnectionsCount"`
}

// Overall derives the overall state the way upstream does: SUCCESS exactly
// when the key latch, the eBPF program and the listener are all RUNNING.
// The key latch is RUNNING as soon as its loop runs, so SUCCESS does not
// mean a key is latched.
func (a *AgentStatus) Overall() OverallState {
	if a.KeyLatchStatus.Status == msp.ModuleRunning &&
		a.EBPFProgramStatus.Status == msp.ModuleRunning &&
		a.ProxyListenerStatus.Status == msp.ModuleRunning {
		return OverallSuccess
	}
	return OverallError
}

// ConnectionSummary is one row of proxyConnectionSummary or
// failedAuthenticateSummary: how many requests one caller made to one
// destination with one outcome over the last four hours.
type ConnectionSummary struct {
	// UserName is the calling process's user.
	UserName string `json:"userName"`
	// IP is the original destination address, or "None".
	IP string `json:"ip"`
	// Port is the original destination port.
	Port uint16 `json:"port"`
	// ProcessCmdLine is the caller's command line, as the proxy redacted it.
	ProcessCmdLine string `json:"processCmdLine"`
	// ResponseStatus is the status line text, such as "403 Forbidden".
	ResponseStatus string `json:"responseStatus"`
	// Count is the number of requests in the retained buckets.
	Count uint64 `json:"count"`
	// UserGroups is written as [] when empty or nil, never null: upstream
	// writes its Vec as an array whatever it holds.
	UserGroups      []string `json:"userGroups"`
	ProcessFullPath string   `json:"processFullPath"`
}

// MarshalJSON writes s with userGroups [] instead of null.
func (s ConnectionSummary) MarshalJSON() ([]byte, error) {
	type plain ConnectionSummary // without this method
	if s.UserGroups == nil {
		s.UserGroups = []string{}
	}
	return json.Marshal(plain(s))
}

// AggregateStatus is the whole of status.json, and the body of
// GET /gpa-aggregated-status.
type AggregateStatus struct {
	// Timestamp is when the status was taken, UTC.
	Timestamp Timestamp `json:"timestamp"`
	// ProxyAgentStatus holds the module states and the overall state.
	ProxyAgentStatus AgentStatus `json:"proxyAgentStatus"`
	// ProxyConnectionSummary counts all requests per caller and outcome.
	ProxyConnectionSummary []ConnectionSummary `json:"proxyConnectionSummary"`
	// FailedAuthenticateSummary counts the denied requests.
	FailedAuthenticateSummary []ConnectionSummary `json:"failedAuthenticateSummary"`
}

// MarshalIndent renders s the way status.json is written: two-space
// indented, with a trailing newline. Summaries that are nil are written as
// empty arrays, because upstream never writes null there.
func (s *AggregateStatus) MarshalIndent() ([]byte, error) {
	c := s.normalized()
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("status: encoding aggregate status: %w", err)
	}
	return append(b, '\n'), nil
}

// MarshalCompact renders s on one line, as GET /gpa-aggregated-status serves it.
func (s *AggregateStatus) MarshalCompact() ([]byte, error) {
	c := s.normalized()
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("status: encoding aggregate status: %w", err)
	}
	return b, nil
}

func (s *AggregateStatus) normalized() AggregateStatus {
	c := *s
	if c.ProxyConnectionSummary == nil {
		c.ProxyConnectionSummary = []ConnectionSummary{}
	}
	if c.FailedAuthenticateSummary == nil {
		c.FailedAuthenticateSummary = []ConnectionSummary{}
	}
	return c
}

// TimestampLayout is the status.json timestamp: UTC, milliseconds, no zone
// designator, always 23 characters.
const TimestampLayout = "2006-01-02T15:04:05.000"

// Timestamp is a status.json timestamp. It is written in TimestampLayout and
// read with or without milliseconds and with or without a zone; a timestamp
// without a zone is UTC.
type Timestamp struct{ time.Time }

// MarshalText implements encoding.TextMarshaler.
func (t Timestamp) MarshalText() ([]byte, error) {
	return t.UTC().AppendFormat(nil, TimestampLayout), nil
}

// MarshalJSON implements json.Marshaler. It is needed although
// MarshalText exists, because the embedded time.Time's MarshalJSON would
// otherwise be promoted and write RFC 3339 with a zone.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimestampLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimestampLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler, for the same reason as
// MarshalJSON.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: timestamp is not a string: %s", ErrInvalidStatus, b)
	}
	return t.UnmarshalText([]byte(s))
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Timestamp) UnmarshalText(b []byte) error {
	v, err := ParseTimestamp(string(b))
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// ParseTimestamp parses the timestamp forms seen in status.json and
// provisioned.tag: "2025-04-23T12:00:00.123", the same with a "Z" or an
// offset, and any of these without fractional seconds. The result is UTC.
func ParseTimestamp(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	// time.Parse accepts any number of fractional digits after a ".999"-less
	// layout, so two layouts cover every form.
	for _, layout := range [...]string{"2006-01-02T15:04:05", time.RFC3339Nano} {
		if v, err := time.Parse(layout, s); err == nil {
			return v.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: timestamp %q", ErrInvalidStatus, s)
}

// Parse decodes a status.json document: the current upstream format, this
// package's output, and the older 1.0.x files (the states keys are kept as
// written; KeyLatchStates reads both spellings). A UTF-8 byte order mark is
// tolerated. A missing module status reads as UNKNOWN and a missing overall
// status is derived with Overall, so an incomplete file never reads as
// healthy; other missing fields are left at their zero values. Malformed
// input is an error wrapping ErrInvalidStatus.
func Parse(data []byte) (*AggregateStatus, error) {
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	var s AggregateStatus
	if err := json.Unmarshal(data, &s); err != nil {
		if isStatusErr(err) {
			return nil, fmt.Errorf("status: parsing status.json: %w", err)
		}
		return nil, fmt.Errorf("status: parsing status.json: %w: %w", ErrInvalidStatus, err)
	}
	a := &s.ProxyAgentStatus
	for _, m := range []*ModuleStatus{&a.MonitorStatus, &a.KeyLatchStatus, &a.EBPFProgramStatus, &a.ProxyListenerStatus, &a.TelemetryLoggerStatus} {
		if m.Status == "" {
			m.Status = msp.ModuleUnknown
		}
		if len(m.States) == 0 {
			m.States = nil // "states": {} and no states say the same
		}
	}
	if a.Status == "" {
		a.Status = a.Overall()
	}
	for _, list := range [][]ConnectionSummary{s.ProxyConnectionSummary, s.FailedAuthenticateSummary} {
		for i := range list {
			if len(list[i].UserGroups) == 0 {
				list[i].UserGroups = nil // [] and null say the same; [] is written
			}
		}
	}
	return &s, nil
}

// ReadFile reads and parses a status.json file.
func ReadFile(path string) (*AggregateStatus, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("status: reading %s: %w", path, err)
	}
	return Parse(data)
}
