package keylatch

import (
	"time"

	"github.com/metadatasec/gpa/msp"
)

// Snapshot is one consistent version of everything the latch knows: the
// secure-channel state, the compiled rules of every endpoint and the key to
// sign with. A Snapshot is immutable once published; a change at the host
// produces a new Snapshot with a higher Epoch, so a consumer that reads one
// Snapshot per request never mixes a new key with old rules.
type Snapshot struct {
	// Epoch increases by one with every published snapshot.
	Epoch uint64
	// State is the secure-channel state string of docs/protocol.md §2.5:
	// "Unknown", "disabled", "wireserver", or
	// "WireServer Enforce -  IMDS Audit - HostGA Enforce".
	State string
	// Policy holds the compiled rules and the mode of every endpoint.
	Policy *msp.Policy
	// Key is the latched key; zero (Valid() false) when there is none.
	Key msp.Key
	// Signer signs with Key; nil when there is no key.
	Signer *msp.Signer
	// KeyIncarnationID is the host's keyIncarnationId, when it sent one.
	KeyIncarnationID *uint32
	// Items are the effective rule sets per endpoint (local rules applied,
	// ids as displayed) that Policy was compiled from. Read-only.
	Items map[msp.Endpoint]*msp.AuthorizationItem
	// RuleIDs are the effective rule-set ids per endpoint, as status.json
	// reports them (wireServerRuleId, imdsRuleId, hostGARuleId).
	RuleIDs map[msp.Endpoint]string
	// Updated is when the snapshot was published.
	Updated time.Time
	// Restored marks a snapshot read back from the state an earlier run of
	// the agent kept on disk (LatchState), which the host has not confirmed
	// yet: its key and modes are the last known ones. It is published when
	// the latcher is created and replaced by the first snapshot built from
	// a status the host sent. Its Key is missing when the key file named in
	// the state could not be read; its modes apply all the same, so a
	// consumer must not send unsigned what an endpoint in Enforce would
	// refuse.
	Restored bool
}

// Latched reports whether the secure channel is latched: the state is
// neither "Unknown" nor "disabled" (upstream's is_secure_channel_latched).
func (s *Snapshot) Latched() bool {
	return s != nil && s.State != msp.SecureChannelUnknown && s.State != msp.SecureChannelDisabled
}

// Mode returns the mode of ep in this snapshot.
func (s *Snapshot) Mode(ep msp.Endpoint) msp.Mode {
	if s == nil {
		return msp.ModeDisabled
	}
	return s.Policy.Mode(ep)
}
