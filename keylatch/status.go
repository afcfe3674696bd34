package keylatch

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Sentinel errors of the package. Errors are wrapped with context; test
// with errors.Is.
var (
	// ErrInvalidStatus means the secure-channel status failed to parse or
	// to validate (docs/protocol.md §2.3).
	ErrInvalidStatus = errors.New("keylatch: invalid key status")
	// ErrHostResponse means the host answered with an unexpected status
	// code or body encoding; see *HostError.
	ErrHostResponse = errors.New("keylatch: unexpected host response")
	// ErrKeyNotFound means the store has no key file for a guid.
	ErrKeyNotFound = errors.New("keylatch: key not found")
	// ErrCorruptKey means a key file exists but does not hold a usable key.
	// The latcher treats it like a missing file, never as a key.
	ErrCorruptKey = errors.New("keylatch: corrupt key file")
	// ErrInsecurePath means the key folder or a file in it is a symlink,
	// not owned by root, or accessible by group or others.
	ErrInsecurePath = errors.New("keylatch: insecure key store path")
	// ErrKeyMismatch means the key read back after saving differs from the
	// key that was saved.
	ErrKeyMismatch = errors.New("keylatch: stored key does not match")
)

// KeyStatus is the answer of GET /secure-channel/status (docs/protocol.md
// §2.3). Rules are kept as the host sent them, with modes as text, because
// upstream turns an unknown mode into Disabled rather than rejecting the
// status.
type KeyStatus struct {
	AuthorizationScheme       string
	KeyDeliveryMethod         string
	KeyIncarnationID          *uint32
	KeyGUID                   *string
	RequiredClaimsHeaderPairs []string
	SecureChannelState        *string
	SecureChannelEnabled      *bool
	Version                   string
	// AuthorizationRules is nil when the host sent null or nothing.
	AuthorizationRules *StatusRules
}

// StatusRules is the authorizationRules object of a v2.0 status.
type StatusRules struct {
	IMDS       *StatusItem
	WireServer *StatusItem
	HostGA     *StatusItem
}

// StatusItem is one endpoint's AuthorizationItem as the host sent it.
// DefaultAccess and Mode stay text until Item interprets them.
type StatusItem struct {
	DefaultAccess string
	Mode          string
	ID            string
	Rules         *msp.AccessControlRules
}

// Item converts the item as upstream does: anything other than "allow" is
// deny, and an unparseable mode becomes Disabled, reported through
// modeErr so the caller can log it.
func (it *StatusItem) Item() (item *msp.AuthorizationItem, modeErr error) {
	if it == nil {
		return nil, nil
	}
	out := &msp.AuthorizationItem{ID: it.ID, Rules: it.Rules, DefaultAccess: msp.AccessDeny}
	if strings.EqualFold(it.DefaultAccess, "allow") {
		out.DefaultAccess = msp.AccessAllow
	}
	m, err := msp.ParseMode(it.Mode)
	if err != nil {
		return out, err
	}
	out.Mode = m
	return out, nil
}

type statusItemJSON struct {
	DefaultAccess *string                 `json:"defaultAccess" xml:"defaultAccess"`
	Mode          *string                 `json:"mode" xml:"mode"`
	ID            *string                 `json:"id" xml:"id"`
	Rules         *msp.AccessControlRules `json:"rules" xml:"-"`
}

type statusJSON struct {
	AuthorizationScheme       *string  `json:"authorizationScheme" xml:"authorizationScheme"`
	KeyDeliveryMethod         *string  `json:"keyDeliveryMethod" xml:"keyDeliveryMethod"`
	KeyIncarnationID          *uint32  `json:"keyIncarnationId" xml:"keyIncarnationId"`
	KeyGUID                   *string  `json:"keyGuid" xml:"keyGuid"`
	RequiredClaimsHeaderPairs []string `json:"requiredClaimsHeaderPairs" xml:"requiredClaimsHeaderPairs"`
	SecureChannelState        *string  `json:"secureChannelState" xml:"secureChannelState"`
	SecureChannelEnabled      *bool    `json:"secureChannelEnabled" xml:"secureChannelEnabled"`
	Version                   *string  `json:"version" xml:"version"`
	AuthorizationRules        *struct {
		IMDS       *statusItemJSON `json:"imds" xml:"imds"`
		WireServer *statusItemJSON `json:"wireserver" xml:"wireserver"`
		HostGA     *statusItemJSON `json:"hostga" xml:"hostga"`
	} `json:"authorizationRules" xml:"authorizationRules"`
}

// ParseKeyStatus decodes and validates a JSON status. Errors wrap
// ErrInvalidStatus.
func ParseKeyStatus(data []byte) (*KeyStatus, error) {
	var raw statusJSON
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	if err := msp.DecodeStrictJSON(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %w", ErrInvalidStatus, err)
	}
	return raw.status()
}

// ParseKeyStatusXML decodes and validates a status sent as XML (a
// Content-Type containing "xml"). Which XML the host sends is not
// documented (docs/protocol.md §2.2 only says upstream parses it); this reads
// the JSON field names as elements under any root element. Rules lists are
// not read from XML, so an XML item carries only defaultAccess, mode and id.
// Errors wrap ErrInvalidStatus.
func ParseKeyStatusXML(data []byte) (*KeyStatus, error) {
	var raw statusJSON
	if err := xml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: malformed XML: %w", ErrInvalidStatus, err)
	}
	return raw.status()
}

func (raw *statusJSON) status() (*KeyStatus, error) {
	var missing []string
	if raw.AuthorizationScheme == nil {
		missing = append(missing, "authorizationScheme")
	}
	if raw.KeyDeliveryMethod == nil {
		missing = append(missing, "keyDeliveryMethod")
	}
	if raw.Version == nil {
		missing = append(missing, "version")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing %s", ErrInvalidStatus, strings.Join(missing, ", "))
	}
	s := &KeyStatus{
		AuthorizationScheme:       *raw.AuthorizationScheme,
		KeyDeliveryMethod:         *raw.KeyDeliveryMethod,
		KeyIncarnationID:          raw.KeyIncarnationID,
		KeyGUID:                   raw.KeyGUID,
		RequiredClaimsHeaderPairs: raw.RequiredClaimsHeaderPairs,
		SecureChannelState:        raw.SecureChannelState,
		SecureChannelEnabled:      raw.SecureChannelEnabled,
		Version:                   *raw.Version,
	}
	if ar := raw.AuthorizationRules; ar != nil {
		s.AuthorizationRules = &StatusRules{
			IMDS:       ar.IMDS.item(),
			WireServer: ar.WireServer.item(),
			HostGA:     ar.HostGA.item(),
		}
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func (j *statusItemJSON) item() *StatusItem {
	if j == nil {
		return nil
	}
	it := &StatusItem{Rules: j.Rules}
	if j.DefaultAccess != nil {
		it.DefaultAccess = *j.DefaultAccess
	}
	if j.Mode != nil {
		it.Mode = *j.Mode
	}
	if j.ID != nil {
		it.ID = *j.ID
	}
	return it
}

// Validate applies upstream's four rejection rules (docs/protocol.md §2.3).
// A scheme or delivery method it does not know is not an error.
func (s *KeyStatus) Validate() error {
	switch {
	case s.SecureChannelEnabled == nil && s.SecureChannelState == nil:
		return fmt.Errorf("%w: neither secureChannelEnabled nor secureChannelState is present", ErrInvalidStatus)
	case s.SecureChannelState != nil && !knownV1State(*s.SecureChannelState):
		return fmt.Errorf("%w: unknown secureChannelState %q", ErrInvalidStatus, *s.SecureChannelState)
	case s.Version == "1.0" && s.SecureChannelState == nil:
		return fmt.Errorf("%w: version 1.0 without secureChannelState", ErrInvalidStatus)
	case s.Version == "2.0" && s.SecureChannelEnabled == nil:
		return fmt.Errorf("%w: version 2.0 without secureChannelEnabled", ErrInvalidStatus)
	}
	return nil
}

func knownV1State(s string) bool {
	switch strings.ToLower(s) {
	case "disabled", "wireserver", "wireserverandimds":
		return true
	}
	return false
}

// v2Active reports whether a v2.0 status turns the secure channel on.
func (s *KeyStatus) v2Active() bool {
	return s.SecureChannelEnabled != nil && *s.SecureChannelEnabled && s.AuthorizationRules != nil
}

// StateString returns the secure-channel state string of docs/protocol.md §2.5,
// byte for byte, including the double space before "IMDS" and HostGA taking
// the WireServer mode.
func (s *KeyStatus) StateString() string {
	if s.Version == "2.0" {
		if !s.v2Active() {
			return msp.SecureChannelDisabled
		}
		ws := s.Mode(msp.EndpointWireServer)
		return msp.SecureChannelState(ws, s.Mode(msp.EndpointIMDS), ws)
	}
	if s.SecureChannelState == nil {
		return msp.SecureChannelDisabled
	}
	return strings.ToLower(*s.SecureChannelState)
}

// Mode returns the endpoint's mode (docs/protocol.md §2.5). HostGA always
// follows WireServer. An unparseable v2.0 mode is Disabled.
func (s *KeyStatus) Mode(ep msp.Endpoint) msp.Mode {
	if ep == msp.EndpointHostGA {
		ep = msp.EndpointWireServer
	}
	if s.Version == "2.0" {
		if s.AuthorizationRules == nil {
			return msp.ModeDisabled
		}
		it := s.AuthorizationRules.WireServer
		if ep == msp.EndpointIMDS {
			it = s.AuthorizationRules.IMDS
		}
		if it == nil {
			return msp.ModeDisabled
		}
		m, _ := msp.ParseMode(it.Mode)
		return m
	}
	state := ""
	if s.SecureChannelState != nil {
		state = strings.ToLower(*s.SecureChannelState)
	}
	if ep == msp.EndpointIMDS {
		switch state {
		case "disabled", "":
			return msp.ModeDisabled
		case "wireserverandimds":
			return msp.ModeEnforce
		}
		return msp.ModeAudit
	}
	switch state {
	case "wireserver", "wireserverandimds":
		return msp.ModeEnforce
	case "audit":
		return msp.ModeAudit
	}
	return msp.ModeDisabled
}

// String renders the status as upstream's Display does, for the "Got key
// status successfully" log line.
func (s *KeyStatus) String() string {
	guid := "None"
	if s.KeyGUID != nil {
		guid = *s.KeyGUID
	}
	state := "None"
	if s.SecureChannelState != nil {
		state = *s.SecureChannelState
	}
	return fmt.Sprintf("authorizationScheme: %s, keyDeliveryMethod: %s, keyGuid: %s, secureChannelState: %s, version: %s, WireServerMode: %s, IMDSMode: %s",
		s.AuthorizationScheme, s.KeyDeliveryMethod, guid, state, s.Version,
		s.Mode(msp.EndpointWireServer), s.Mode(msp.EndpointIMDS))
}
