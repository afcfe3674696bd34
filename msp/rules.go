package msp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// AuthorizationItem is one endpoint's rule set as the host delivers it in the
// key status (authorizationRules.imds, .wireserver, .hostga) and as the local
// rules file and the gallery profile carry it.
type AuthorizationItem struct {
	// DefaultAccess applies when no privilege matched the request.
	DefaultAccess DefaultAccess `json:"defaultAccess"`
	// Mode is the endpoint's enforcement mode.
	Mode Mode `json:"mode"`
	// ID names the rule set: a gallery resource id, a hash, or a base64
	// local-rules descriptor (docs/protocol.md §4.8).
	ID string `json:"id"`
	// Rules is optional; without it only DefaultAccess applies.
	Rules *AccessControlRules `json:"rules,omitempty"`
}

// AccessControlRules is the RBAC-style body of a rule set. Upstream uses the
// four lists only when all four are present; see [AccessControlRules.Complete].
type AccessControlRules struct {
	Privileges      []Privilege      `json:"privileges,omitempty"`
	Roles           []Role           `json:"roles,omitempty"`
	Identities      []Identity       `json:"identities,omitempty"`
	RoleAssignments []RoleAssignment `json:"roleAssignments,omitempty"`

	// presence of each list in the JSON it was parsed from; a zero value
	// built in Go counts every non-nil list as present.
	present uint8
}

const (
	hasPrivileges = 1 << iota
	hasRoles
	hasIdentities
	hasRoleAssignments
	hasAll = hasPrivileges | hasRoles | hasIdentities | hasRoleAssignments
)

// presence is which lists count as present: as parsed, or for rules built
// in Go every non-nil list.
func (r *AccessControlRules) presence() uint8 {
	if r.present != 0 {
		return r.present
	}
	var p uint8
	if r.Privileges != nil {
		p |= hasPrivileges
	}
	if r.Roles != nil {
		p |= hasRoles
	}
	if r.Identities != nil {
		p |= hasIdentities
	}
	if r.RoleAssignments != nil {
		p |= hasRoleAssignments
	}
	return p
}

// AppendRules concatenates two rule documents list by list, a first, as
// upstream merges a local rules file into the host's: a list is present in
// the result when it is present in either, so the result is complete only
// when upstream's would be. Nil when both are nil; the other one when
// only one is given.
func AppendRules(a, b *AccessControlRules) *AccessControlRules {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		c := *b
		return &c
	case b == nil:
		c := *a
		return &c
	}
	out := &AccessControlRules{present: a.presence() | b.presence()}
	out.Privileges = append(slices.Clip(a.Privileges), b.Privileges...)
	out.Roles = append(slices.Clip(a.Roles), b.Roles...)
	out.Identities = append(slices.Clip(a.Identities), b.Identities...)
	out.RoleAssignments = append(slices.Clip(a.RoleAssignments), b.RoleAssignments...)
	return out
}

// UnmarshalJSON records which of the four lists were present, because
// upstream ignores all rules when any list is missing.
func (r *AccessControlRules) UnmarshalJSON(b []byte) error {
	var raw struct {
		Privileges      *[]Privilege      `json:"privileges"`
		Roles           *[]Role           `json:"roles"`
		Identities      *[]Identity       `json:"identities"`
		RoleAssignments *[]RoleAssignment `json:"roleAssignments"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*r = AccessControlRules{}
	if raw.Privileges != nil {
		r.Privileges, r.present = *raw.Privileges, r.present|hasPrivileges
	}
	if raw.Roles != nil {
		r.Roles, r.present = *raw.Roles, r.present|hasRoles
	}
	if raw.Identities != nil {
		r.Identities, r.present = *raw.Identities, r.present|hasIdentities
	}
	if raw.RoleAssignments != nil {
		r.RoleAssignments, r.present = *raw.RoleAssignments, r.present|hasRoleAssignments
	}
	return nil
}

// MarshalJSON writes all four lists, empty ones as [], so that the document
// is complete in upstream's sense.
func (r AccessControlRules) MarshalJSON() ([]byte, error) {
	type lists struct {
		Privileges      []Privilege      `json:"privileges"`
		Roles           []Role           `json:"roles"`
		Identities      []Identity       `json:"identities"`
		RoleAssignments []RoleAssignment `json:"roleAssignments"`
	}
	l := lists{r.Privileges, r.Roles, r.Identities, r.RoleAssignments}
	if l.Privileges == nil {
		l.Privileges = []Privilege{}
	}
	if l.Roles == nil {
		l.Roles = []Role{}
	}
	if l.Identities == nil {
		l.Identities = []Identity{}
	}
	if l.RoleAssignments == nil {
		l.RoleAssignments = []RoleAssignment{}
	}
	return json.Marshal(l)
}

// Complete reports whether all four lists are present. Upstream's legacy
// matcher uses the rules only when they are; otherwise only defaultAccess
// applies. Rules built in Go (not parsed) are complete when every list is
// non-nil or, for convenience, when at least the privileges are set.
func (r *AccessControlRules) Complete() bool {
	if r == nil {
		return false
	}
	if r.present != 0 {
		return r.present == hasAll
	}
	return r.Privileges != nil || r.Roles != nil || r.Identities != nil || r.RoleAssignments != nil
}

// Privilege grants access to a path, optionally only with given query
// parameters.
type Privilege struct {
	Name            string            `json:"name"`
	Path            string            `json:"path"`
	QueryParameters map[string]string `json:"queryParameters,omitempty"`
}

// Role groups privileges by name.
type Role struct {
	Name       string   `json:"name"`
	Privileges []string `json:"privileges"`
}

// Identity selects callers. Every non-empty selector must match (AND); an
// empty one matches anything.
type Identity struct {
	Name        string `json:"name"`
	UserName    string `json:"userName,omitempty"`
	GroupName   string `json:"groupName,omitempty"`
	ExePath     string `json:"exePath,omitempty"`
	ProcessName string `json:"processName,omitempty"`
}

// RoleAssignment ties a role to identities.
type RoleAssignment struct {
	Role       string   `json:"role"`
	Identities []string `json:"identities"`
}

// ParseAuthorizationItem decodes one endpoint's rule set strictly: unknown
// modes or default-access values, trailing data and invalid JSON are errors
// wrapping ErrInvalidRules. It does not run Validate.
func ParseAuthorizationItem(data []byte) (*AuthorizationItem, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	var item AuthorizationItem
	if err := DecodeStrictJSON(data, &item); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	return &item, nil
}

// ParseRules decodes an AccessControlRules document the same way.
func ParseRules(data []byte) (*AccessControlRules, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	var r AccessControlRules
	if err := DecodeStrictJSON(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	return &r, nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// DecodeStrictJSON decodes exactly one JSON value from data into v, as
// upstream's serde_json from_str does for its files and answers: anything
// after the value but white space, a stray ']' or '}' included, is an
// error. Callers strip an optional UTF-8 BOM first where upstream accepts
// one.
func DecodeStrictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	// Anything but the end of the input, a stray ']' or '}' included, is
	// trailing data (serde_json's from_str refuses it too).
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// ProblemKind classifies a validation problem.
type ProblemKind string

// The validation problems Validate reports.
const (
	ProblemBlankName        ProblemKind = "blank-name"
	ProblemDuplicateName    ProblemKind = "duplicate-name"
	ProblemBlankPath        ProblemKind = "blank-path"
	ProblemBlankQuery       ProblemKind = "blank-query"
	ProblemEmptyRole        ProblemKind = "empty-role"
	ProblemEmptySelector    ProblemKind = "empty-selector"
	ProblemDanglingRef      ProblemKind = "dangling-reference"
	ProblemDuplicateRef     ProblemKind = "duplicate-reference"
	ProblemNoIdentities     ProblemKind = "no-identities"
	ProblemIncompleteRules  ProblemKind = "incomplete-rules"
	ProblemBlankID          ProblemKind = "blank-id"
	ProblemUncanonicalRule  ProblemKind = "uncanonical-rule"
	ProblemNotSegmentPrefix ProblemKind = "not-segment-aligned"
)

// Problem is one thing wrong with a rule set.
type Problem struct {
	Kind ProblemKind
	// Where is a JSON-path-like location, for example "roles[1].privileges[0]".
	Where  string
	Detail string
}

// String renders the problem as "where: kind: detail".
func (p Problem) String() string {
	if p.Detail == "" {
		return fmt.Sprintf("%s: %s", p.Where, p.Kind)
	}
	return fmt.Sprintf("%s: %s: %s", p.Where, p.Kind, p.Detail)
}

// ValidationError lists every problem found in a rule set. It matches
// ErrInvalidRules with errors.Is.
type ValidationError struct {
	Problems []Problem
}

// Error lists every problem, separated by semicolons.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("msp: invalid rules: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalidRules) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidRules }

// Validate checks an item and its rules and returns a *ValidationError with
// every problem found, or nil.
func (it *AuthorizationItem) Validate() error {
	var ps []Problem
	if strings.TrimSpace(it.ID) == "" {
		ps = append(ps, Problem{Kind: ProblemBlankID, Where: "id"})
	}
	if it.Rules != nil {
		ps = append(ps, it.Rules.problems("rules.")...)
	}
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// Validate checks the rules the way upstream validates a local rules file
// (docs/protocol.md §4.8) and more: unique non-blank names, non-blank paths and
// query parameters, roles with privileges, identities with a selector, and
// no reference to anything undefined. It returns every problem found.
func (r *AccessControlRules) Validate() error {
	ps := r.problems("")
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

func (r *AccessControlRules) problems(prefix string) []Problem {
	var ps []Problem
	add := func(k ProblemKind, where, detail string) {
		ps = append(ps, Problem{Kind: k, Where: prefix + where, Detail: detail})
	}
	if r.present != 0 && r.present != hasAll {
		add(ProblemIncompleteRules, "", "privileges, roles, identities and roleAssignments must all be present, or upstream ignores every rule")
	}
	privs := make(map[string]bool, len(r.Privileges))
	for i, p := range r.Privileges {
		w := fmt.Sprintf("privileges[%d]", i)
		switch {
		case strings.TrimSpace(p.Name) == "":
			add(ProblemBlankName, w+".name", "")
		case privs[p.Name]:
			add(ProblemDuplicateName, w+".name", p.Name)
		}
		privs[p.Name] = true
		if strings.TrimSpace(p.Path) == "" {
			add(ProblemBlankPath, w+".path", "")
		}
		for _, k := range slices.Sorted(maps.Keys(p.QueryParameters)) {
			v := p.QueryParameters[k]
			if strings.TrimSpace(k) == "" || strings.TrimSpace(v) == "" {
				add(ProblemBlankQuery, w+".queryParameters", fmt.Sprintf("%q=%q", k, v))
			}
		}
	}
	roles := make(map[string]bool, len(r.Roles))
	for i, ro := range r.Roles {
		w := fmt.Sprintf("roles[%d]", i)
		switch {
		case strings.TrimSpace(ro.Name) == "":
			add(ProblemBlankName, w+".name", "")
		case roles[ro.Name]:
			add(ProblemDuplicateName, w+".name", ro.Name)
		}
		roles[ro.Name] = true
		if len(ro.Privileges) == 0 {
			add(ProblemEmptyRole, w+".privileges", "")
		}
		seen := map[string]bool{}
		for j, ref := range ro.Privileges {
			rw := fmt.Sprintf("%s.privileges[%d]", w, j)
			switch {
			case strings.TrimSpace(ref) == "":
				add(ProblemBlankName, rw, "")
			case seen[ref]:
				add(ProblemDuplicateRef, rw, ref)
			case !privs[ref]:
				add(ProblemDanglingRef, rw, "no privilege named "+strconv.Quote(ref))
			}
			seen[ref] = true
		}
	}
	ids := make(map[string]bool, len(r.Identities))
	for i, id := range r.Identities {
		w := fmt.Sprintf("identities[%d]", i)
		switch {
		case strings.TrimSpace(id.Name) == "":
			add(ProblemBlankName, w+".name", "")
		case ids[id.Name]:
			add(ProblemDuplicateName, w+".name", id.Name)
		}
		ids[id.Name] = true
		if strings.TrimSpace(id.UserName) == "" && strings.TrimSpace(id.GroupName) == "" &&
			strings.TrimSpace(id.ExePath) == "" && strings.TrimSpace(id.ProcessName) == "" {
			add(ProblemEmptySelector, w, "needs userName, groupName, exePath or processName")
		}
	}
	for i, ra := range r.RoleAssignments {
		w := fmt.Sprintf("roleAssignments[%d]", i)
		if strings.TrimSpace(ra.Role) == "" {
			add(ProblemBlankName, w+".role", "")
		} else if !roles[ra.Role] {
			add(ProblemDanglingRef, w+".role", "no role named "+strconv.Quote(ra.Role))
		}
		if len(ra.Identities) == 0 {
			add(ProblemNoIdentities, w+".identities", "")
		}
		seen := map[string]bool{}
		for j, ref := range ra.Identities {
			rw := fmt.Sprintf("%s.identities[%d]", w, j)
			switch {
			case strings.TrimSpace(ref) == "":
				add(ProblemBlankName, rw, "")
			case seen[ref]:
				add(ProblemDuplicateRef, rw, ref)
			case !ids[ref]:
				add(ProblemDanglingRef, rw, "no identity named "+strconv.Quote(ref))
			}
			seen[ref] = true
		}
	}
	return ps
}
