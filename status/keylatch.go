package status

import (
	"fmt"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Keys of keyLatchStatus.states as the current upstream writes them.
const (
	StateKeySecureChannel   = "secureChannelState"
	StateKeyKeyGUID         = "keyGuid"
	StateKeyWireServerRule  = "wireServerRuleId"
	StateKeyIMDSRule        = "imdsRuleId"
	StateKeyHostGARule      = "hostGARuleId"
	StateKeyKeyIncarnation  = "keyIncarnationId"
	legacyKeyWireServerRule = "WireserverRuleId"
)

// KeyLatchStates is the typed view of keyLatchStatus.states. It carries
// identifiers only: the key itself never enters the status.
type KeyLatchStates struct {
	// SecureChannelState is the string of docs/protocol.md §2.5, for example
	// "WireServer Enforce -  IMDS Enforce - HostGA Enforce", "disabled" or
	// "Unknown".
	SecureChannelState string
	// KeyGUID is the latched key's guid; empty when no key is in memory.
	KeyGUID string
	// The raw rule ids from the key status; empty when there are none.
	WireServerRuleID, IMDSRuleID, HostGARuleID string
	// KeyIncarnationID is the decimal incarnation, empty when the key has none.
	KeyIncarnationID string
}

// Map renders k as upstream fills keyLatchStatus.states: the channel state
// and the three rule ids always, the guid and the incarnation only when set.
func (k KeyLatchStates) Map() map[string]string {
	m := map[string]string{
		StateKeySecureChannel:  k.SecureChannelState,
		StateKeyWireServerRule: k.WireServerRuleID,
		StateKeyIMDSRule:       k.IMDSRuleID,
		StateKeyHostGARule:     k.HostGARuleID,
	}
	if m[StateKeySecureChannel] == "" {
		m[StateKeySecureChannel] = msp.SecureChannelUnknown
	}
	if k.KeyGUID != "" {
		m[StateKeyKeyGUID] = k.KeyGUID
	}
	if k.KeyIncarnationID != "" {
		m[StateKeyKeyIncarnation] = k.KeyIncarnationID
	}
	return m
}

// KeyLatchStatesFromMap reads a states map written by any agent version.
// Keys are matched without regard to case, so the 1.0.x spelling
// "WireserverRuleId" is read as the wire-server rule id.
func KeyLatchStatesFromMap(m map[string]string) KeyLatchStates {
	get := func(name string) string {
		if v, ok := m[name]; ok {
			return v
		}
		for k, v := range m {
			if strings.EqualFold(k, name) {
				return v
			}
		}
		return ""
	}
	return KeyLatchStates{
		SecureChannelState: get(StateKeySecureChannel),
		KeyGUID:            get(StateKeyKeyGUID),
		WireServerRuleID:   get(StateKeyWireServerRule),
		IMDSRuleID:         get(StateKeyIMDSRule),
		HostGARuleID:       get(StateKeyHostGARule),
		KeyIncarnationID:   get(StateKeyKeyIncarnation),
	}
}

// SecureChannel is a parsed secure-channel state string.
type SecureChannel struct {
	// Known is false for "Unknown": no status poll has succeeded yet.
	Known bool
	// Disabled is true when the customer has not enabled MSP.
	Disabled bool
	// Per-endpoint modes; all ModeDisabled when Disabled or not Known.
	WireServer, IMDS, HostGA msp.Mode
}

// Latched reports whether the state is one in which upstream considers the
// channel latched: neither disabled nor unknown.
func (c SecureChannel) Latched() bool { return c.Known && !c.Disabled }

// String renders c in the current upstream form, with its double space.
func (c SecureChannel) String() string {
	switch {
	case !c.Known:
		return msp.SecureChannelUnknown
	case c.Disabled:
		return msp.SecureChannelDisabled
	}
	return msp.SecureChannelState(c.WireServer, c.IMDS, c.HostGA)
}

// ParseSecureChannel parses every secure-channel state string seen in the
// field: the current three-part form, the two-part 1.0.x form
// ("Wireserver Enforce - IMDS Enforce", where HostGA follows WireServer), the
// v1 key-status values (wireserver, wireserverandimds), "disabled" and
// "Unknown". Spacing and letter case are not significant.
func ParseSecureChannel(s string) (SecureChannel, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch t {
	case "", "unknown":
		return SecureChannel{}, nil
	case "disabled":
		return SecureChannel{Known: true, Disabled: true}, nil
	case "wireserver":
		return SecureChannel{Known: true, WireServer: msp.ModeEnforce, IMDS: msp.ModeAudit, HostGA: msp.ModeEnforce}, nil
	case "wireserverandimds":
		return SecureChannel{Known: true, WireServer: msp.ModeEnforce, IMDS: msp.ModeEnforce, HostGA: msp.ModeEnforce}, nil
	}
	c := SecureChannel{Known: true}
	var seenWS, seenIMDS, seenHost bool
	for _, part := range strings.Split(t, " - ") {
		fields := strings.Fields(part)
		if len(fields) != 2 {
			return SecureChannel{}, fmt.Errorf("%w: secure channel state %q", ErrInvalidStatus, s)
		}
		m, err := msp.ParseMode(fields[1])
		if err != nil {
			return SecureChannel{}, fmt.Errorf("%w: secure channel state %q: %w", ErrInvalidStatus, s, err)
		}
		var seen *bool
		switch fields[0] {
		case "wireserver":
			c.WireServer, seen = m, &seenWS
		case "imds":
			c.IMDS, seen = m, &seenIMDS
		case "hostga":
			c.HostGA, seen = m, &seenHost
		default:
			return SecureChannel{}, fmt.Errorf("%w: secure channel state %q: unknown endpoint %q", ErrInvalidStatus, s, fields[0])
		}
		if *seen {
			return SecureChannel{}, fmt.Errorf("%w: secure channel state %q: %s repeated", ErrInvalidStatus, s, fields[0])
		}
		*seen = true
	}
	if !seenWS || !seenIMDS {
		return SecureChannel{}, fmt.Errorf("%w: secure channel state %q: needs WireServer and IMDS", ErrInvalidStatus, s)
	}
	if !seenHost {
		// 1.0.x had no HostGA part; HostGA has always followed WireServer.
		c.HostGA = c.WireServer
	}
	return c, nil
}
