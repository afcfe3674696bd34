package keylatch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/metadatasec/gpa/msp"
)

// Local rules files in the rules folder (docs/protocol.md §4.8). HostGA never
// gets local rules.
const (
	WireServerRulesFile = "WireServer_Rules.json"
	IMDSRulesFile       = "IMDS_Rules.json"
	// LocalRulesPrefix goes before every name and reference a local file
	// contributes, so they cannot collide with the host's.
	LocalRulesPrefix = "LocalFileRules_"
)

// RuleDescriptor is what a remote rule-set id may encode: standard base64
// of {"id":"<logicalId>","useLocalFileRules":true}.
type RuleDescriptor struct {
	// LogicalID is the decoded id; "" when the descriptor had none.
	LogicalID string
	// UseLocalFileRules turns the local file on for the endpoint.
	UseLocalFileRules bool
	// Decoded reports that the id was a descriptor at all; otherwise it is
	// a plain id and local rules are off.
	Decoded bool
}

// ParseRuleDescriptor decodes a remote rule-set id. An id that is not
// standard base64 of a JSON object is a plain id.
func ParseRuleDescriptor(id string) RuleDescriptor {
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil {
		return RuleDescriptor{}
	}
	var d struct {
		ID                *string `json:"id"`
		UseLocalFileRules *bool   `json:"useLocalFileRules"`
	}
	if err := json.Unmarshal(raw, &d); err != nil || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return RuleDescriptor{}
	}
	out := RuleDescriptor{Decoded: true}
	if d.ID != nil {
		out.LogicalID = *d.ID
	}
	if d.UseLocalFileRules != nil {
		out.UseLocalFileRules = *d.UseLocalFileRules
	}
	return out
}

// DisplayID is the effective id of §4.8: "<logicalId>-useLocalFileRules-
// <bool>" for a descriptor ("unknown" for an empty logical id), or the id
// itself when it is not a descriptor.
func DisplayID(id string) string {
	d := ParseRuleDescriptor(id)
	if !d.Decoded {
		return id
	}
	if d.LogicalID == "" {
		return "unknown"
	}
	return fmt.Sprintf("%s-useLocalFileRules-%t", d.LogicalID, d.UseLocalFileRules)
}

// MergeLocalRules combines a remote item with a valid local file as §4.8
// says. remote may be nil. The result is a new item.
func MergeLocalRules(remote *msp.AuthorizationItem, displayID string, local *msp.LocalRules) *msp.AuthorizationItem {
	out := &msp.AuthorizationItem{DefaultAccess: msp.AccessDeny, Mode: msp.ModeDisabled}
	if remote != nil {
		out.DefaultAccess, out.Mode = remote.DefaultAccess, remote.Mode
	}
	out.ID = displayID
	if local.ID != nil {
		out.ID += "_" + *local.ID
	}
	if local.DefaultAccess != nil {
		out.DefaultAccess, _ = msp.ParseDefaultAccess(*local.DefaultAccess)
	}
	var rules msp.AccessControlRules
	if remote != nil && remote.Rules != nil {
		r := remote.Rules
		rules.Privileges = append(rules.Privileges, r.Privileges...)
		rules.Roles = append(rules.Roles, r.Roles...)
		rules.Identities = append(rules.Identities, r.Identities...)
		rules.RoleAssignments = append(rules.RoleAssignments, r.RoleAssignments...)
	}
	if l := local.Rules; l != nil {
		p := func(s string) string { return LocalRulesPrefix + s }
		for _, x := range l.Privileges {
			x.Name = p(x.Name)
			rules.Privileges = append(rules.Privileges, x)
		}
		for _, x := range l.Roles {
			r := msp.Role{Name: p(x.Name)}
			for _, ref := range x.Privileges {
				r.Privileges = append(r.Privileges, p(ref))
			}
			rules.Roles = append(rules.Roles, r)
		}
		for _, x := range l.Identities {
			x.Name = p(x.Name)
			rules.Identities = append(rules.Identities, x)
		}
		for _, x := range l.RoleAssignments {
			ra := msp.RoleAssignment{Role: p(x.Role)}
			for _, ref := range x.Identities {
				ra.Identities = append(ra.Identities, p(ref))
			}
			rules.RoleAssignments = append(rules.RoleAssignments, ra)
		}
	}
	// A merged document built in Go counts as complete when it has lists;
	// make them non-nil so the matcher uses them.
	if rules.Privileges == nil {
		rules.Privileges = []msp.Privilege{}
	}
	if rules.Roles == nil {
		rules.Roles = []msp.Role{}
	}
	if rules.Identities == nil {
		rules.Identities = []msp.Identity{}
	}
	if rules.RoleAssignments == nil {
		rules.RoleAssignments = []msp.RoleAssignment{}
	}
	out.Rules = &rules
	return out
}

// FailClosed is the item an endpoint gets when its local file is broken:
// the remote item (or deny+enforce with the display id) with defaultAccess
// deny and no rules. The remote mode is kept, so under audit requests are
// still forwarded, as upstream.
func FailClosed(remote *msp.AuthorizationItem, displayID string) *msp.AuthorizationItem {
	out := &msp.AuthorizationItem{Mode: msp.ModeEnforce, ID: displayID}
	if remote != nil {
		out.Mode = remote.Mode
	}
	out.DefaultAccess = msp.AccessDeny
	return out
}

// LocalRulesResult is the effective item of one endpoint after the local
// rules step.
type LocalRulesResult struct {
	Item *msp.AuthorizationItem
	// Used reports that the local file was merged in.
	Used bool
	// Err is set when the file was enabled but unusable; Item is then the
	// fail-closed item.
	Err error
}

// ApplyLocalRules computes an endpoint's effective item from the remote
// one and, when the remote id is a descriptor with useLocalFileRules, the
// file in rulesDir. read reads a file (the store's checks apply); a missing
// file leaves the remote rules in force with the display id.
func ApplyLocalRules(remote *msp.AuthorizationItem, fileName string, read func(path string) ([]byte, error)) LocalRulesResult {
	if remote == nil {
		return LocalRulesResult{}
	}
	d := ParseRuleDescriptor(remote.ID)
	display := DisplayID(remote.ID)
	normalised := *remote
	normalised.ID = display
	if !d.UseLocalFileRules {
		return LocalRulesResult{Item: &normalised}
	}
	data, err := read(fileName)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrKeyNotFound) {
		return LocalRulesResult{Item: &normalised}
	}
	if err != nil {
		return LocalRulesResult{Item: FailClosed(remote, display), Err: fmt.Errorf("%w: %s: %w", msp.ErrInvalidLocalRules, filepath.Base(fileName), err)}
	}
	lr, err := msp.ParseLocalRules(data)
	if err != nil {
		return LocalRulesResult{Item: FailClosed(remote, display), Err: fmt.Errorf("%s: %w", filepath.Base(fileName), err)}
	}
	return LocalRulesResult{Item: MergeLocalRules(remote, display, lr), Used: true}
}
