package msp

import (
	"fmt"
	"strings"
)

// The words below are the agent's, not the host's: every package that
// reports or reads the agent's health (keylatch, status, the tools) uses
// them, so they are defined once here.

// ModuleState is an agent module's health as status.json reports it.
type ModuleState string

// The module states upstream writes. The zero value is not valid on the
// wire; a module starts at ModuleUnknown.
const (
	ModuleUnknown ModuleState = "UNKNOWN"
	ModuleRunning ModuleState = "RUNNING"
	ModuleStopped ModuleState = "STOPPED"
)

// UnmarshalText accepts the three states in any letter case, because
// hand-edited and older files are not consistent about it, and rejects
// anything else with ErrInvalidModuleState.
func (s *ModuleState) UnmarshalText(b []byte) error {
	switch v := ModuleState(strings.ToUpper(strings.TrimSpace(string(b)))); v {
	case ModuleUnknown, ModuleRunning, ModuleStopped:
		*s = v
		return nil
	}
	return fmt.Errorf("%w %q", ErrInvalidModuleState, b)
}

// The two fixed secure-channel states; the others name the mode of each
// endpoint, as "WireServer Enforce -  IMDS Audit - HostGA Enforce".
const (
	// SecureChannelUnknown: no key status poll has succeeded yet.
	SecureChannelUnknown = "Unknown"
	// SecureChannelDisabled: MSP is off for this VM.
	SecureChannelDisabled = "disabled"
)

// The agent's own endpoints on its listener, which it answers itself
// before looking at the destination.
const (
	// ProvisionPath is what `azure-proxy-agent --status` (cloud-init)
	// polls.
	ProvisionPath = "/provision"
	// AggregateStatusPath serves status.json to elevated callers.
	AggregateStatusPath = "/gpa-aggregated-status"
)

// The key latch's status messages, upstream's wording, which status.json
// carries and troubleshooters match by prefix. Messages that end in
// " - <ms>" carry the milliseconds since start.
const (
	KeyLatchMsgStarted       = "poll secure channel status task started."
	KeyLatchMsgStatusFailed  = "Failed to get key status - "
	KeyLatchMsgFoundLocal    = "Found key details from local and ready to use."
	KeyLatchMsgAttested      = "Successfully attest the key and ready to use."
	KeyLatchMsgDisabled      = "Customer has not enforce the secure channel state."
	KeyLatchMsgAcquireFailed = "Failed to acquire key details: "
	KeyLatchMsgSaveFailed    = "Failed to save key details to file: "
	KeyLatchMsgCheckFailed   = "Failed to check the key '"
	KeyLatchMsgAttestFailed  = "Failed to attest the key: "
	KeyLatchMsgCancelled     = "poll_secure_channel_status task cancelled."
)

// Key latch messages of ours, not upstream's. KeyLatchMsgRestored: a
// restarted latch serves the state it kept on disk until the host answers.
// KeyLatchMsgStatusRecovered: polls succeed again after
// KeyLatchMsgStatusFailed, which otherwise stayed until the next key event.
// Both end in " - <ms>".
const (
	KeyLatchMsgRestored        = "Restored the last known key status from local; waiting for the host to confirm it."
	KeyLatchMsgStatusRecovered = "Key status polls recovered; the host answers again."
)
