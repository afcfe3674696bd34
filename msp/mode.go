package msp

import (
	"fmt"
	"strings"
)

// Mode is an endpoint's enforcement mode.
type Mode uint8

// The modes. ModeDisabled is the zero value: nothing is redirected.
const (
	ModeDisabled Mode = iota
	ModeAudit
	ModeEnforce
)

// String returns the lowercase wire form: "disabled", "audit", "enforce".
func (m Mode) String() string {
	switch m {
	case ModeAudit:
		return "audit"
	case ModeEnforce:
		return "enforce"
	}
	return "disabled"
}

// DisplayName returns the capitalised form used in status strings and ARM:
// "Disabled", "Audit", "Enforce".
func (m Mode) DisplayName() string {
	switch m {
	case ModeAudit:
		return "Audit"
	case ModeEnforce:
		return "Enforce"
	}
	return "Disabled"
}

// SecureChannelState builds the three-part secure channel state the
// agent reports in status.json and its key latch publishes,
// "WireServer <m> -  IMDS <m> - HostGA <m>". The double space is
// upstream's; tests and tools compare the string byte for byte.
func SecureChannelState(wireServer, imds, hostGA Mode) string {
	return "WireServer " + wireServer.DisplayName() + " -  IMDS " + imds.DisplayName() + " - HostGA " + hostGA.DisplayName()
}

// ParseMode parses a mode case-insensitively, ignoring surrounding space.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "disabled":
		return ModeDisabled, nil
	case "audit":
		return ModeAudit, nil
	case "enforce":
		return ModeEnforce, nil
	}
	return ModeDisabled, fmt.Errorf("%w: %q", ErrInvalidMode, s)
}

// MarshalText implements encoding.TextMarshaler with the lowercase form the
// host uses in authorizationRules.
func (m Mode) MarshalText() ([]byte, error) {
	if m > ModeEnforce {
		return nil, fmt.Errorf("%w: %d", ErrInvalidMode, m)
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. Unlike upstream, which
// turns an unknown mode into Disabled, it returns ErrInvalidMode: callers that
// want upstream's leniency use ParseMode and decide themselves.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// DefaultAccess is what a rule set does with a request no privilege matched.
type DefaultAccess uint8

// The default-access values. AccessDeny is the zero value, so a forgotten
// field fails closed.
const (
	AccessDeny DefaultAccess = iota
	AccessAllow
)

// String returns "deny" or "allow".
func (a DefaultAccess) String() string {
	if a == AccessAllow {
		return "allow"
	}
	return "deny"
}

// DisplayName returns "Deny" or "Allow" as ARM spells them.
func (a DefaultAccess) DisplayName() string {
	if a == AccessAllow {
		return "Allow"
	}
	return "Deny"
}

// ParseDefaultAccess parses "allow" or "deny" case-insensitively, ignoring
// surrounding space. Anything else is ErrInvalidDefaultAccess.
func ParseDefaultAccess(s string) (DefaultAccess, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "allow":
		return AccessAllow, nil
	case "deny":
		return AccessDeny, nil
	}
	return AccessDeny, fmt.Errorf("%w: %q", ErrInvalidDefaultAccess, s)
}

// MarshalText implements encoding.TextMarshaler.
func (a DefaultAccess) MarshalText() ([]byte, error) {
	if a > AccessAllow {
		return nil, fmt.Errorf("%w: %d", ErrInvalidDefaultAccess, a)
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *DefaultAccess) UnmarshalText(b []byte) error {
	v, err := ParseDefaultAccess(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
