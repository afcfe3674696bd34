package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Format is one of the three shapes a rule set comes in.
type Format uint8

// The formats.
const (
	// FormatItem is an authorizationRules item of the key status:
	// {"defaultAccess","mode","id","rules"}.
	FormatItem Format = iota
	// FormatLocal is the local rules file of docs/protocol.md §4.8
	// ({"defaultAccess","id","rules"}, no mode: the remote mode applies).
	FormatLocal
	// FormatGallery is a gallery inVMAccessControlProfile version body:
	// {"location","properties":{"mode","defaultAccess","rules"}} with ARM's
	// capitalised enum values.
	FormatGallery
)

// String returns "item", "local" or "gallery".
func (f Format) String() string {
	switch f {
	case FormatLocal:
		return "local"
	case FormatGallery:
		return "gallery"
	}
	return "item"
}

// ParseFormat parses a format name.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "item", "status", "":
		return FormatItem, nil
	case "local", "file":
		return FormatLocal, nil
	case "gallery", "profile", "arm":
		return FormatGallery, nil
	}
	return FormatItem, fmt.Errorf("policy: unknown rules format %q (want item, local or gallery)", s)
}

// ErrBadRules marks a rules document that cannot be read.
var ErrBadRules = errors.New("policy: bad rules document")

type galleryBody struct {
	Location   string            `json:"location,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	Properties galleryProps      `json:"properties"`
}

type galleryProps struct {
	Mode          string                  `json:"mode"`
	DefaultAccess string                  `json:"defaultAccess"`
	Rules         *msp.AccessControlRules `json:"rules,omitempty"`
	// Other version properties (targetLocations, excludeFromLatest, ...)
	// are kept verbatim only by the arm package; here they are dropped.
}

// ReadRules reads a rule set in any of the three formats, detecting which
// from its shape. A local file gets the given mode (the remote one, which
// the file cannot set) and, without an id, the id "local".
func ReadRules(data []byte, localMode msp.Mode) (*msp.AuthorizationItem, Format, error) {
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrBadRules, err)
	}
	switch {
	case probe["properties"] != nil:
		var g galleryBody
		if err := json.Unmarshal(data, &g); err != nil {
			return nil, FormatGallery, fmt.Errorf("%w: gallery body: %v", ErrBadRules, err)
		}
		mode, err := msp.ParseMode(g.Properties.Mode)
		if err != nil {
			return nil, FormatGallery, fmt.Errorf("%w: %w", ErrBadRules, err)
		}
		def, err := msp.ParseDefaultAccess(g.Properties.DefaultAccess)
		if err != nil {
			return nil, FormatGallery, fmt.Errorf("%w: %w", ErrBadRules, err)
		}
		return &msp.AuthorizationItem{Mode: mode, DefaultAccess: def, ID: "gallery", Rules: g.Properties.Rules}, FormatGallery, nil
	case probe["mode"] != nil && probe["id"] != nil:
		item, err := msp.ParseAuthorizationItem(data)
		if err != nil {
			return nil, FormatItem, fmt.Errorf("%w: %w", ErrBadRules, err)
		}
		return item, FormatItem, nil
	}
	l, err := msp.ParseLocalRules(data)
	var ve *msp.ValidationError
	if errors.As(err, &ve) {
		// The agent reads a file whose rules do not hold together as
		// deny-all and keeps the host's mode (it fails closed), so that is
		// what a simulation of it must decide.
		return &msp.AuthorizationItem{Mode: localMode, DefaultAccess: msp.AccessDeny, ID: "local-rules-invalid"}, FormatLocal, nil
	}
	if err != nil {
		return nil, FormatLocal, fmt.Errorf("%w: %w", ErrBadRules, err)
	}
	item := &msp.AuthorizationItem{Mode: localMode, DefaultAccess: msp.AccessDeny, ID: "local", Rules: l.Rules}
	if l.DefaultAccess != nil {
		item.DefaultAccess, _ = msp.ParseDefaultAccess(*l.DefaultAccess) // ParseLocalRules checked it
	}
	if l.ID != nil {
		item.ID = strings.TrimSpace(*l.ID)
	}
	return item, FormatLocal, nil
}

// WriteRules renders item in format f, indented for people. A gallery body
// gets location loc.
func WriteRules(item *msp.AuthorizationItem, f Format, loc string) ([]byte, error) {
	var v any
	switch f {
	case FormatLocal:
		def := item.DefaultAccess.String()
		lr := &msp.LocalRules{DefaultAccess: &def, Rules: item.Rules}
		if id := strings.TrimSpace(item.ID); id != "" {
			lr.ID = &id
		}
		return lr.MarshalIndent()
	case FormatGallery:
		v = galleryBody{Location: loc, Properties: galleryProps{Mode: item.Mode.DisplayName(),
			DefaultAccess: item.DefaultAccess.DisplayName(), Rules: item.Rules}}
	default:
		v = item
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
