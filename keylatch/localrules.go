package keylatch

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

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
	// LogicalID is the decoded id, or the trimmed id itself when it is not
	// a descriptor; "" for an empty id or a descriptor without one.
	LogicalID string
	// UseLocalFileRules turns the local file on for the endpoint.
	UseLocalFileRules bool
	// Decoded reports that the id was a descriptor at all; otherwise it is
	// a plain id and local rules are off.
	Decoded bool
}

// Local rules are read as upstream reads them: up to three attempts, 50 ms
// apart, when the file is unreadable or not JSON; a file that parses but
// fails validation fails at once.
const (
	localRulesAttempts   = 3
	localRulesRetryDelay = 50 * time.Millisecond
)

// ParseRuleDescriptor decodes a remote rule-set id as upstream does: the id
// is trimmed; standard base64 of a JSON object whose id is a string and
// whose useLocalFileRules is a bool (each may be missing, no key twice) is
// a descriptor; anything else is a plain id.
func ParseRuleDescriptor(id string) RuleDescriptor {
	id = strings.TrimSpace(id)
	if id == "" {
		return RuleDescriptor{}
	}
	plain := RuleDescriptor{LogicalID: id}
	raw, err := base64.StdEncoding.DecodeString(id)
	if err != nil || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) || msp.RejectDuplicateKeys(raw) != nil {
		return plain
	}
	var d struct {
		ID                *string `json:"id"`
		UseLocalFileRules *bool   `json:"useLocalFileRules"`
	}
	if err := msp.DecodeStrictJSON(raw, &d); err != nil {
		return plain
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

// display is the id upstream shows for an item whose remote id parsed to
// d: "<logicalId>-useLocalFileRules-<bool>" whenever there is a logical
// id, a plain id included; raw unchanged otherwise.
func (d RuleDescriptor) display(raw string) string {
	if d.LogicalID == "" {
		return raw
	}
	return fmt.Sprintf("%s-useLocalFileRules-%t", d.LogicalID, d.UseLocalFileRules)
}

// DisplayID is the effective id upstream shows in status.json, its logs
// and its rule snapshots for a remote rule-set id (§4.8):
// "<logicalId>-useLocalFileRules-<bool>" for any non-blank id, a plain one
// too; a descriptor without a logical id, or an empty id, is shown as is.
func DisplayID(id string) string { return ParseRuleDescriptor(id).display(id) }

// MergeLocalRules combines a remote item with a valid local file as §4.8
// says. remote may be nil. The result is a new item. The local names get
// LocalRulesPrefix only when both sides have rules, as upstream; a rule
// list is present in the result when either side has it, so the merged
// rules are used exactly when upstream would use them.
func MergeLocalRules(remote *msp.AuthorizationItem, displayID string, local *msp.LocalRules) *msp.AuthorizationItem {
	out := &msp.AuthorizationItem{DefaultAccess: msp.AccessDeny, Mode: msp.ModeDisabled}
	var remoteRules *msp.AccessControlRules
	if remote != nil {
		out.DefaultAccess, out.Mode, remoteRules = remote.DefaultAccess, remote.Mode, remote.Rules
	}
	out.ID = displayID
	if local.ID != nil {
		out.ID += "_" + *local.ID
	}
	if local.DefaultAccess != nil {
		out.DefaultAccess, _ = msp.ParseDefaultAccess(*local.DefaultAccess)
	}
	localRules := local.Rules
	if remoteRules != nil && localRules != nil {
		localRules = prefixLocalNames(localRules)
	}
	out.Rules = msp.AppendRules(remoteRules, localRules)
	return out
}

// prefixLocalNames returns l with LocalRulesPrefix before every name and
// reference, so they cannot collide with the host's. Absent lists stay
// absent.
func prefixLocalNames(l *msp.AccessControlRules) *msp.AccessControlRules {
	p := func(s string) string { return LocalRulesPrefix + s }
	out := *l
	out.Privileges, out.Roles, out.Identities, out.RoleAssignments = slices.Clone(l.Privileges), slices.Clone(l.Roles), slices.Clone(l.Identities), slices.Clone(l.RoleAssignments)
	for i := range out.Privileges {
		out.Privileges[i].Name = p(out.Privileges[i].Name)
	}
	for i, r := range out.Roles {
		out.Roles[i] = msp.Role{Name: p(r.Name)}
		for _, ref := range r.Privileges {
			out.Roles[i].Privileges = append(out.Roles[i].Privileges, p(ref))
		}
	}
	for i := range out.Identities {
		out.Identities[i].Name = p(out.Identities[i].Name)
	}
	for i, ra := range out.RoleAssignments {
		out.RoleAssignments[i] = msp.RoleAssignment{Role: p(ra.Role)}
		for _, ref := range ra.Identities {
			out.RoleAssignments[i].Identities = append(out.RoleAssignments[i].Identities, p(ref))
		}
	}
	return &out
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
	display := d.display(remote.ID)
	normalised := *remote
	normalised.ID = display
	if !d.UseLocalFileRules {
		return LocalRulesResult{Item: &normalised}
	}
	var err error
	attempt := 1
	for ; attempt <= localRulesAttempts; attempt++ {
		if attempt > 1 {
			time.Sleep(localRulesRetryDelay)
		}
		var data []byte
		data, err = read(fileName)
		if attempt == 1 && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrKeyNotFound)) {
			return LocalRulesResult{Item: &normalised}
		}
		if err != nil {
			err = fmt.Errorf("%w: %s: %w", msp.ErrInvalidLocalRules, filepath.Base(fileName), err)
			continue
		}
		var lr *msp.LocalRules
		lr, err = msp.ParseLocalRules(data)
		if err == nil {
			return LocalRulesResult{Item: MergeLocalRules(remote, display, lr), Used: true}
		}
		err = fmt.Errorf("%s: %w", filepath.Base(fileName), err)
		if !errors.Is(err, msp.ErrMalformedJSON) {
			break // valid JSON that fails validation: no retry, as upstream
		}
	}
	return LocalRulesResult{Item: FailClosed(remote, display), Err: fmt.Errorf("attempt %d: %w", min(attempt, localRulesAttempts), err)}
}
