package policy

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// GroupBy chooses what makes two requests come from the same caller.
type GroupBy uint8

// The groupings. GroupByExe is the default.
const (
	GroupByExe GroupBy = iota
	GroupByUser
	GroupByBoth
)

// ParseGroupBy parses exe, user or both.
func ParseGroupBy(s string) (GroupBy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "exe", "":
		return GroupByExe, nil
	case "user":
		return GroupByUser, nil
	case "both":
		return GroupByBoth, nil
	}
	return GroupByExe, fmt.Errorf("policy: unknown grouping %q (want exe, user or both)", s)
}

// DefaultQueryKeys are the query parameters that name what is accessed
// (which token, which WireServer component) and so become requirements of a
// learned privilege. Others, like api-version, vary between callers and
// releases without changing what is accessed.
var DefaultQueryKeys = []string{"resource", "comp", "client_id", "object_id", "msi_res_id", "mi_res_id"}

// LearnOptions configure Learn. The zero value learns an IMDS rule set
// grouped by executable.
type LearnOptions struct {
	// Endpoint whose records are learned; EndpointNone means IMDS.
	Endpoint msp.Endpoint
	GroupBy  GroupBy
	// QueryKeys become requirements when present; nil means DefaultQueryKeys.
	QueryKeys []string
	// MinSegments is the shortest path (in segments) a privilege may be
	// collapsed to; 0 means 2, so /metadata alone is never granted by
	// collapsing.
	MinSegments int
	// ID is the rule set id; empty means "learned-<endpoint>".
	ID string
	// Mode of the learned rule set; the zero value (Disabled) means Enforce.
	Mode msp.Mode
}

// Skipped is a record Learn could not turn into a privilege.
type Skipped struct {
	Record msp.AuditRecord `json:"record"`
	Reason string          `json:"reason"`
}

// LearnResult is a learned rule set and what was left out.
type LearnResult struct {
	Item *msp.AuthorizationItem `json:"item"`
	// Skipped are the first MaxSkipped records left out, with why.
	Skipped []Skipped `json:"skipped,omitempty"`
	// SkippedTotal counts every record left out.
	SkippedTotal int `json:"skippedTotal,omitempty"`
}

// MaxSkipped bounds LearnResult.Skipped.
const MaxSkipped = 1000

// ErrNothingToLearn is returned when no record of the endpoint could be used.
var ErrNothingToLearn = errors.New("policy: no usable audit records for the endpoint")

type caller struct{ exe, user string }

type tuple struct {
	path  []string // canonical segments, root first
	query [][2]string
}

func (t tuple) key() string {
	var b strings.Builder
	b.WriteString(strings.Join(t.path, "/"))
	for _, kv := range t.query {
		b.WriteString("\x00" + kv[0] + "=" + kv[1])
	}
	return b.String()
}

// Learn builds the smallest readable rule set that allows the observed
// (caller, path, required query) tuples and denies everything else: one
// identity per caller, privileges collapsed segment-wise to the longest
// common path of what the same callers use, one role per set of callers
// that use the same privileges, default access Deny.
func Learn(records []msp.AuditRecord, opts *LearnOptions) (*LearnResult, error) {
	return LearnFrom(Records(records), opts)
}

// LearnFrom is Learn over a stream of records, for example AuditLogs: the
// memory it needs grows with the distinct (caller, path) tuples seen, not
// with the number of records.
func LearnFrom(src RecordSource, opts *LearnOptions) (*LearnResult, error) {
	o := LearnOptions{}
	if opts != nil {
		o = *opts
	}
	if o.Endpoint == msp.EndpointNone {
		o.Endpoint = msp.EndpointIMDS
	}
	if o.QueryKeys == nil {
		o.QueryKeys = DefaultQueryKeys
	}
	if o.MinSegments <= 0 {
		o.MinSegments = 2
	}
	if o.ID == "" {
		o.ID = "learned-" + o.Endpoint.String()
	}
	if o.Mode == msp.ModeDisabled {
		o.Mode = msp.ModeEnforce
	}
	wanted := map[string]bool{}
	for _, k := range o.QueryKeys {
		wanted[strings.ToLower(k)] = true
	}

	res := &LearnResult{}
	tuples := map[string]tuple{}
	users := map[string]map[caller]bool{} // tuple key → callers
	err := src(func(rec msp.AuditRecord) error {
		if rec.Destination() != o.Endpoint {
			return nil
		}
		skip := func(reason string) {
			// The count is exact; the examples stop at MaxSkipped so
			// that a huge log cannot grow the result without bound.
			res.SkippedTotal++
			if len(res.Skipped) < MaxSkipped {
				res.Skipped = append(res.Skipped, Skipped{Record: rec, Reason: reason})
			}
		}
		if rec.Verdict() == msp.VerdictDeny {
			// What the agent refused (in Enforce, or before authorization:
			// malformed, traversal) is not evidence of need.
			skip("denied by the agent")
			return nil
		}
		if o.Endpoint.RequiresRoot() && !rec.RunAsElevated {
			skip("non-root callers are always refused by " + o.Endpoint.DisplayName())
			return nil
		}
		c := callerOf(&rec, o.GroupBy)
		if c.exe == "" && c.user == "" {
			skip("caller unknown (no executable or user recorded)")
			return nil
		}
		cr, err := msp.Canonicalize(rec.Method, rec.Request().RawURI)
		if err != nil {
			var ce *msp.CanonError
			if errors.As(err, &ce) {
				skip(ce.Code)
			} else {
				skip(err.Error())
			}
			return nil
		}
		t := tuple{path: cr.Path.Segments}
		for _, k := range slices.Sorted(maps.Keys(cr.Query)) {
			if wanted[k] && len(cr.Query[k]) > 0 {
				t.query = append(t.query, [2]string{k, cr.Query[k][0]})
			}
		}
		k := t.key()
		tuples[k] = t
		if users[k] == nil {
			users[k] = map[caller]bool{}
		}
		users[k][c] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(tuples) == 0 {
		return res, ErrNothingToLearn
	}

	// Identities, one per caller, named readably and uniquely.
	allCallers := map[caller]bool{}
	for _, cs := range users {
		for c := range cs {
			allCallers[c] = true
		}
	}
	callers := slices.SortedFunc(maps.Keys(allCallers), func(a, b caller) int {
		return cmp.Or(strings.Compare(a.exe, b.exe), strings.Compare(a.user, b.user))
	})
	idName := map[caller]string{}
	taken := map[string]int{}
	rules := &msp.AccessControlRules{Privileges: []msp.Privilege{}, Roles: []msp.Role{}, Identities: []msp.Identity{}, RoleAssignments: []msp.RoleAssignment{}}
	for _, c := range callers {
		name := uniqueName(taken, identityBaseName(c))
		idName[c] = name
		rules.Identities = append(rules.Identities, msp.Identity{Name: name, ExePath: c.exe, UserName: c.user})
	}

	// Group tuples by (caller set, query requirement), then collapse paths
	// within a group that share their first MinSegments segments.
	type group struct {
		callers string
		query   string
		tuples  []tuple
	}
	groups := map[[2]string]*group{}
	for k, t := range tuples {
		cs := callerSetKey(users[k], idName)
		qk := tuple{query: t.query}.key()
		g := groups[[2]string{cs, qk}]
		if g == nil {
			g = &group{callers: cs, query: qk}
			groups[[2]string{cs, qk}] = g
		}
		g.tuples = append(g.tuples, t)
	}
	// Privileges first, each remembering the set of callers it serves.
	type learned struct {
		name    string
		callers string
	}
	var privs []learned
	sets := map[string]bool{}
	for _, gk := range slices.SortedFunc(maps.Keys(groups), func(a, b [2]string) int {
		return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1]))
	}) {
		g := groups[gk]
		sets[g.callers] = true
		for _, t := range collapse(g.tuples, o.MinSegments) {
			name := uniqueName(taken, privilegeBaseName(t))
			p := msp.Privilege{Name: name, Path: msp.CanonicalPath{Segments: t.path}.EscapedString()}
			if len(t.query) > 0 {
				p.QueryParameters = map[string]string{}
				for _, kv := range t.query {
					p.QueryParameters[kv[0]] = kv[1]
				}
			}
			rules.Privileges = append(rules.Privileges, p)
			privs = append(privs, learned{name, g.callers})
		}
	}
	// Roles: one per set of callers that share privileges, or one per
	// caller when that is fewer (callers that each use a different mix).
	if len(sets) <= len(callers) {
		for _, cs := range slices.Sorted(maps.Keys(sets)) {
			r := msp.Role{Name: uniqueName(taken, roleBaseName(cs))}
			for _, p := range privs {
				if p.callers == cs {
					r.Privileges = append(r.Privileges, p.name)
				}
			}
			rules.Roles = append(rules.Roles, r)
			rules.RoleAssignments = append(rules.RoleAssignments, msp.RoleAssignment{Role: r.Name, Identities: strings.Split(cs, "\x00")})
		}
	} else {
		for _, c := range callers {
			id := idName[c]
			r := msp.Role{Name: uniqueName(taken, id+"-access")}
			for _, p := range privs {
				if slices.Contains(strings.Split(p.callers, "\x00"), id) {
					r.Privileges = append(r.Privileges, p.name)
				}
			}
			rules.Roles = append(rules.Roles, r)
			rules.RoleAssignments = append(rules.RoleAssignments, msp.RoleAssignment{Role: r.Name, Identities: []string{id}})
		}
	}
	res.Item = &msp.AuthorizationItem{Mode: o.Mode, DefaultAccess: msp.AccessDeny, ID: o.ID, Rules: rules}
	if err := res.Item.Validate(); err != nil {
		return nil, fmt.Errorf("policy: learned rules do not validate (a bug): %w", err)
	}
	return res, nil
}

func callerOf(r *msp.AuditRecord, g GroupBy) caller {
	switch g {
	case GroupByUser:
		return caller{user: r.UserName}
	case GroupByBoth:
		return caller{exe: r.ProcessFullPath, user: r.UserName}
	}
	if r.ProcessFullPath == "" {
		return caller{user: r.UserName}
	}
	return caller{exe: r.ProcessFullPath}
}

func callerSetKey(cs map[caller]bool, names map[caller]string) string {
	var ns []string
	for c := range cs {
		ns = append(ns, names[c])
	}
	slices.Sort(ns)
	return strings.Join(ns, "\x00")
}

// collapse merges tuples that share their first min segments into their
// longest common segment prefix. Tuples shorter than min stay as they are.
func collapse(ts []tuple, min int) []tuple {
	buckets := map[string][]tuple{}
	var order []string
	for _, t := range ts {
		k := t.key()
		if len(t.path)-1 >= min {
			k = strings.Join(t.path[:min+1], "/")
		}
		if _, ok := buckets[k]; !ok {
			order = append(order, k)
		}
		buckets[k] = append(buckets[k], t)
	}
	slices.Sort(order)
	var out []tuple
	for _, k := range order {
		b := buckets[k]
		lcp := b[0].path
		for _, t := range b[1:] {
			n := 0
			for n < len(lcp) && n < len(t.path) && lcp[n] == t.path[n] {
				n++
			}
			lcp = lcp[:n]
		}
		out = append(out, tuple{path: slices.Clone(lcp), query: b[0].query})
	}
	return out
}

func identityBaseName(c caller) string {
	exe := c.exe
	if i := strings.LastIndexByte(exe, '/'); i >= 0 {
		exe = exe[i+1:]
	}
	switch {
	case exe != "" && c.user != "":
		return sanitize(exe + "-as-" + c.user)
	case exe != "":
		return sanitize(exe)
	}
	return sanitize("user-" + c.user)
}

func privilegeBaseName(t tuple) string {
	parts := slices.Clone(t.path[1:])
	if len(parts) == 0 {
		parts = []string{"root"}
	}
	for _, kv := range t.query {
		parts = append(parts, kv[0])
	}
	return sanitize(strings.Join(parts, "-"))
}

func roleBaseName(callers string) string {
	ids := strings.Split(callers, "\x00")
	if len(ids) == 1 {
		return ids[0] + "-access"
	}
	return "shared-" + strings.Join(ids, "-")
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 60 {
		out = out[:60]
	}
	if out == "" {
		out = "x"
	}
	return out
}

func uniqueName(taken map[string]int, base string) string {
	taken[base]++
	if n := taken[base]; n > 1 {
		return fmt.Sprintf("%s-%d", base, n)
	}
	return base
}
