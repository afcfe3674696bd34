package msp

import (
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// Matcher selects how request paths and queries are matched against
// privileges.
type Matcher uint8

// The matchers. MatcherCanonical is the zero value and the default.
const (
	// MatcherCanonical matches the canonical form of §4.7: segment-aware,
	// decode-once, fail-closed.
	MatcherCanonical Matcher = iota
	// MatcherLegacy reproduces upstream's decisions exactly (§4.5),
	// string-prefix paths included, for users who need identical behaviour.
	MatcherLegacy
	// MatcherShadow evaluates both, decides with EvaluatorOptions.ShadowDecider
	// and reports divergences.
	MatcherShadow
)

// String returns "canonical", "legacy" or "shadow".
func (m Matcher) String() string {
	switch m {
	case MatcherLegacy:
		return "legacy"
	case MatcherShadow:
		return "shadow"
	}
	return "canonical"
}

// ParseMatcher parses a matcher name case-insensitively.
func ParseMatcher(s string) (Matcher, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "canonical", "":
		return MatcherCanonical, nil
	case "legacy":
		return MatcherLegacy, nil
	case "shadow":
		return MatcherShadow, nil
	}
	return MatcherCanonical, fmt.Errorf("msp: unknown matcher %q (want canonical, legacy or shadow)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (m Matcher) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *Matcher) UnmarshalText(b []byte) error {
	v, err := ParseMatcher(string(b))
	*m = v
	return err
}

// Verdict is what the proxy does with a request.
type Verdict uint8

// The verdicts. VerdictDeny is the zero value so a forgotten decision fails
// closed.
const (
	VerdictDeny Verdict = iota
	VerdictAllow
	// VerdictAllowAudited forwards a request the rules deny, because the
	// endpoint is in Audit mode; it is logged as a denial.
	VerdictAllowAudited
)

// String returns "deny", "allow" or "audit".
func (v Verdict) String() string {
	switch v {
	case VerdictAllow:
		return "allow"
	case VerdictAllowAudited:
		return "audit"
	}
	return "deny"
}

// MarshalText implements encoding.TextMarshaler.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *Verdict) UnmarshalText(b []byte) error {
	switch string(b) {
	case "deny":
		*v = VerdictDeny
	case "allow":
		*v = VerdictAllow
	case "audit":
		*v = VerdictAllowAudited
	default:
		return fmt.Errorf("msp: unknown verdict %q", b)
	}
	return nil
}

// Forwarded reports whether the request goes to the host.
func (v Verdict) Forwarded() bool { return v != VerdictDeny }

// Reason says why a decision was made.
type Reason uint8

// The reasons.
const (
	ReasonDefault           Reason = iota // no privilege matched; defaultAccess applied
	ReasonIdentityMatched                 // a privilege and one of its identities matched
	ReasonNoIdentityMatched               // a privilege matched but none of its identities
	ReasonRootRequired                    // WireServer/HostGA and the caller is not root
	ReasonSkipSig                         // skip-sig URL from root
	ReasonNoRules                         // no rule set for the endpoint
	ReasonDisabled                        // the endpoint's mode is Disabled
	ReasonCanonError                      // the request could not be canonicalised
	ReasonNotProtected                    // the destination is not a host endpoint
)

var reasonNames = [...]string{"default", "identity-matched", "no-identity-matched", "root-required",
	"skip-sig", "no-rules", "disabled", "canonicalisation-error", "not-protected"}

// String returns a stable kebab-case name.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Reason) UnmarshalText(b []byte) error {
	for i, n := range reasonNames {
		if n == string(b) {
			*r = Reason(i)
			return nil
		}
	}
	return fmt.Errorf("msp: unknown reason %q", b)
}

// Decision is the outcome of evaluating one request, with enough detail to
// audit it.
type Decision struct {
	Verdict   Verdict  `json:"decision"`
	Reason    Reason   `json:"reason"`
	Endpoint  Endpoint `json:"endpoint"`
	Mode      Mode     `json:"mode"`
	RuleSetID string   `json:"ruleSetId,omitempty"`
	// Privilege and Identity name what matched, when something did.
	Privilege string `json:"privilege,omitempty"`
	Identity  string `json:"identity,omitempty"`
	// CanonError is the canonicalisation error code, when there was one.
	CanonError string `json:"canonError,omitempty"`
	// Matcher decided; Divergent is set in shadow mode when the other
	// matcher's rules verdict differed.
	Matcher   Matcher `json:"matcher"`
	Divergent bool    `json:"divergent,omitempty"`
}

// Request is what the evaluator needs to know about a request.
type Request struct {
	Method string
	// RawURI is the origin-form request target as received.
	RawURI string
	Claims *Claims
}

// Divergence reports a shadow-mode disagreement between the matchers.
type Divergence struct {
	Endpoint  Endpoint
	RuleSetID string
	RawURI    string
	Legacy    Decision
	Canonical Decision
}

// String renders the divergence like upstream's CANON_DIVERGENCE log line.
func (d Divergence) String() string {
	canon := d.Canonical.Verdict.String()
	if d.Canonical.CanonError != "" {
		canon = "error:" + d.Canonical.CanonError
	}
	return fmt.Sprintf("CANON_DIVERGENCE mode=shadow rule_set=%s legacy=%s canon=%s uri=%q",
		d.RuleSetID, rulesWord(d.Legacy), canon, d.RawURI)
}

func rulesWord(d Decision) string {
	if d.Verdict == VerdictAllow {
		return "allow"
	}
	return "deny"
}

// EvaluatorOptions configure Compile. The zero value means the canonical
// matcher.
type EvaluatorOptions struct {
	Matcher Matcher
	// ShadowDecider is the matcher whose verdict counts in shadow mode:
	// MatcherLegacy (or MatcherShadow) for upstream's Shadow, where legacy
	// decides; the zero value, MatcherCanonical, lets canonical decide.
	ShadowDecider Matcher
	// OnDivergence, if set, is called synchronously in shadow mode for each
	// divergent request. It must be cheap and safe for concurrent use.
	OnDivergence func(Divergence)
}

// SkipSigURI reports whether method and raw URI form one of the skip-sig
// requests of §3.3 (compared lowercase, exactly).
func SkipSigURI(method, rawURI string) bool {
	switch {
	case strings.EqualFold(method, "PUT"):
		return strings.EqualFold(rawURI, "/vmagentlog")
	case strings.EqualFold(method, "POST"):
		return strings.EqualFold(rawURI, "/machine/?comp=telemetrydata")
	}
	return false
}

// Evaluator decides requests for one endpoint under one rule set. It is
// immutable and safe for concurrent use.
type Evaluator struct {
	endpoint Endpoint
	mode     Mode
	def      DefaultAccess
	id       string
	hasItem  bool
	useRules bool
	privs    []compiledPrivilege
	opts     EvaluatorOptions
}

type compiledPrivilege struct {
	name string
	// legacy form: Unicode-lowercased path prefix and query pairs
	lpath  string
	lquery [][2]string
	// canonical form
	cpath  CanonicalPath
	cquery CanonicalQuery
	ids    []*compiledIdentity
}

type compiledIdentity struct {
	name                             string
	userName, groupName, processName string
	exePath                          []string // path components; nil when absent
}

// Compile builds an evaluator for endpoint from item. A nil item means the
// endpoint has no rule set: every request is allowed, except that WireServer
// and HostGA still require root. It fails only with the canonical or shadow
// matcher when a privilege cannot be canonicalised (a *ValidationError),
// because dropping such a privilege silently could widen access.
func Compile(endpoint Endpoint, item *AuthorizationItem, opts *EvaluatorOptions) (*Evaluator, error) {
	e := &Evaluator{endpoint: endpoint}
	if opts != nil {
		e.opts = *opts
	}
	if e.opts.ShadowDecider == MatcherShadow {
		e.opts.ShadowDecider = MatcherLegacy
	}
	if item == nil {
		return e, nil
	}
	e.hasItem = true
	e.mode, e.def, e.id = item.Mode, item.DefaultAccess, item.ID
	r := item.Rules
	if !r.Complete() {
		return e, nil
	}
	e.useRules = true

	ids := make(map[string]*compiledIdentity, len(r.Identities))
	for _, id := range r.Identities {
		ci := &compiledIdentity{name: id.Name, userName: id.UserName, groupName: id.GroupName, processName: id.ProcessName}
		if id.ExePath != "" {
			// Never empty for a non-empty path, so nil still means "no exePath".
			ci.exePath = slices.Collect(components(id.ExePath))
		}
		ids[id.Name] = ci
	}
	privIdx := make(map[string]int, len(r.Privileges))
	var problems []Problem
	for i, p := range r.Privileges {
		cp := compiledPrivilege{name: p.Name, lpath: strings.ToLower(p.Path)}
		for _, k := range slices.Sorted(maps.Keys(p.QueryParameters)) {
			cp.lquery = append(cp.lquery, [2]string{strings.ToLower(k), strings.ToLower(p.QueryParameters[k])})
		}
		if e.opts.Matcher != MatcherLegacy {
			var err error
			if cp.cpath, err = CanonicalizePath(p.Path); err == nil {
				cp.cpath.TrailingSlash = false
				var qs []string
				for _, kv := range cp.lquery {
					qs = append(qs, kv[0]+"="+kv[1])
				}
				cp.cquery, err = CanonicalizeQuery(strings.Join(qs, "&"))
			}
			if err != nil {
				problems = append(problems, Problem{Kind: ProblemUncanonicalRule,
					Where: fmt.Sprintf("rules.privileges[%d]", i), Detail: err.Error()})
			}
		}
		if j, dup := privIdx[p.Name]; dup {
			e.privs[j] = cp // the last definition wins, as upstream
			continue
		}
		privIdx[p.Name] = len(e.privs)
		e.privs = append(e.privs, cp)
	}
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	roles := make(map[string][]string, len(r.Roles))
	for _, ro := range r.Roles {
		roles[ro.Name] = ro.Privileges
	}
	for _, ra := range r.RoleAssignments {
		privNames, ok := roles[ra.Role]
		if !ok {
			continue
		}
		for _, pn := range privNames {
			j, ok := privIdx[pn]
			if !ok {
				continue
			}
			for _, in := range ra.Identities {
				if ci, ok := ids[in]; ok && !slices.Contains(e.privs[j].ids, ci) {
					e.privs[j].ids = append(e.privs[j].ids, ci)
				}
			}
		}
	}
	return e, nil
}

// Endpoint returns the endpoint the evaluator decides for.
func (e *Evaluator) Endpoint() Endpoint { return e.endpoint }

// Mode returns the endpoint's mode.
func (e *Evaluator) Mode() Mode { return e.mode }

// RuleSetID returns the rule set's id ("" without one).
func (e *Evaluator) RuleSetID() string { return e.id }

// Evaluate decides one request in the order of §4.4: skip-sig from root,
// the root requirement of WireServer and HostGA, then the rules and the mode.
func (e *Evaluator) Evaluate(req *Request) Decision {
	d := Decision{Endpoint: e.endpoint, Mode: e.mode, RuleSetID: e.id, Matcher: e.opts.Matcher}
	elevated := req.Claims != nil && req.Claims.RunAsElevated
	switch {
	case e.endpoint == EndpointNone:
		d.Verdict, d.Reason = VerdictAllow, ReasonNotProtected
		return d
	case elevated && SkipSigURI(req.Method, req.RawURI):
		d.Verdict, d.Reason = VerdictAllow, ReasonSkipSig
		return d
	case e.endpoint.RequiresRoot() && !elevated:
		d.Verdict, d.Reason = VerdictDeny, ReasonRootRequired
		return d
	case !e.hasItem:
		d.Verdict, d.Reason = VerdictAllow, ReasonNoRules
		return d
	case e.mode == ModeDisabled:
		d.Verdict, d.Reason = VerdictAllow, ReasonDisabled
		return d
	}
	switch e.opts.Matcher {
	case MatcherLegacy:
		e.matchLegacy(req, &d)
	case MatcherShadow:
		legacy, canon := d, d
		e.matchLegacy(req, &legacy)
		e.matchCanonical(req, &canon)
		legacy.Matcher, canon.Matcher = MatcherLegacy, MatcherCanonical
		if (legacy.Verdict == VerdictAllow) != (canon.Verdict == VerdictAllow) {
			legacy.Divergent, canon.Divergent = true, true
			if e.opts.OnDivergence != nil {
				e.opts.OnDivergence(Divergence{Endpoint: e.endpoint, RuleSetID: e.id, RawURI: req.RawURI, Legacy: legacy, Canonical: canon})
			}
		}
		if e.opts.ShadowDecider == MatcherCanonical {
			d = canon
		} else {
			d = legacy
		}
	default:
		e.matchCanonical(req, &d)
	}
	if d.Verdict == VerdictDeny && e.mode == ModeAudit {
		d.Verdict = VerdictAllowAudited
	}
	return d
}

// resolve fills the rules verdict (Allow or Deny) the same way for both
// matchers: the first privilege that matches the request and has an
// identity matching the caller allows; a privilege that matched without
// one denies (upstream does not fall back to the default then); when
// nothing matched, defaultAccess decides.
func (e *Evaluator) resolve(d *Decision, claims *Claims, matches func(*compiledPrivilege) bool) {
	var first *compiledPrivilege
	for i := range e.privs {
		p := &e.privs[i]
		if !e.useRules || !matches(p) {
			continue
		}
		if first == nil {
			first = p
		}
		for _, id := range p.ids {
			if id.match(claims) {
				d.Verdict, d.Reason, d.Privilege, d.Identity = VerdictAllow, ReasonIdentityMatched, p.name, id.name
				return
			}
		}
	}
	switch {
	case first != nil:
		d.Verdict, d.Reason, d.Privilege = VerdictDeny, ReasonNoIdentityMatched, first.name
	case e.def == AccessAllow:
		d.Verdict, d.Reason = VerdictAllow, ReasonDefault
	default:
		d.Verdict, d.Reason = VerdictDeny, ReasonDefault
	}
}

func (e *Evaluator) matchCanonical(req *Request, d *Decision) {
	if !e.useRules {
		e.resolve(d, req.Claims, nil)
		return
	}
	// Metadata paths have a handful of segments and their queries one to
	// three parameters: arrays on the stack hold both, so matching a
	// request allocates nothing (a longer one spills to the heap).
	var segs [16]string
	var qbuf [8]queryPair
	path, rawQuery, err := canonicalTarget(segs[:0], req.Method, req.RawURI)
	var pairs []queryPair
	if err == nil {
		pairs, err = appendQueryPairs(qbuf[:0], rawQuery)
	}
	if err != nil {
		d.Verdict, d.Reason = VerdictDeny, ReasonCanonError
		if ce, ok := err.(*CanonError); ok {
			d.CanonError = ce.Code
		}
		return
	}
	e.resolve(d, req.Claims, func(p *compiledPrivilege) bool {
		return path.HasPrefix(p.cpath) && queryContains(pairs, p.cquery)
	})
}

// queryContains: every required key is present, and every value the
// request gives for it is one of the allowed values. Requiring all of them,
// not any, closes parameter pollution: for ?comp=certificates&comp=goalstate
// a host that reads the first value would serve certificates under a rule
// that allows goalstate.
func queryContains(have []queryPair, want CanonicalQuery) bool {
	for k, allowed := range want {
		found := false
		for _, p := range have {
			if p.key != k {
				continue
			}
			if !slices.Contains(allowed, p.value) {
				return false
			}
			found = true
		}
		if !found {
			return false
		}
	}
	return true
}

func (e *Evaluator) matchLegacy(req *Request, d *Decision) {
	if !e.useRules {
		e.resolve(d, req.Claims, nil)
		return
	}
	rawPath, rawQuery, _ := strings.Cut(req.RawURI, "?")
	p := strings.ToLower(PercentDecodeLossy(rawPath))
	path, embedded, hasEmbedded := strings.Cut(p, "?")
	e.resolve(d, req.Claims, func(pr *compiledPrivilege) bool {
		return strings.HasPrefix(path, pr.lpath) &&
			(len(pr.lquery) == 0 || legacyQueryMatch(pr.lquery, rawQuery, embedded, hasEmbedded))
	})
}

// legacyQueryMatch: for each required key the first candidate pair whose
// decoded, lowercased key equals it decides; its value must equal.
// Candidates are the raw query's pairs, then the embedded query's.
func legacyQueryMatch(want [][2]string, rawQuery, embedded string, hasEmbedded bool) bool {
	for _, kv := range want {
		val, found := firstLegacyValue(rawQuery, kv[0], true)
		if !found && hasEmbedded {
			val, found = firstLegacyValue(embedded, kv[0], false)
		}
		if !found || val != kv[1] {
			return false
		}
	}
	return true
}

func firstLegacyValue(query, key string, decode bool) (string, bool) {
	for query != "" {
		var piece string
		piece, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(piece, "=")
		if k == "" {
			continue
		}
		if decode {
			k, v = strings.ToLower(PercentDecodeLossy(k)), strings.ToLower(PercentDecodeLossy(v))
		}
		if k == key {
			return v, true
		}
	}
	return "", false
}

// PercentDecodeLossy decodes every valid %XX escape and leaves malformed
// ones as they are, then replaces invalid UTF-8 with U+FFFD, as upstream's
// percent_decode + from_utf8_lossy does. The legacy matcher and the proxy's
// traversal guard see paths through it.
func PercentDecodeLossy(s string) string {
	if strings.IndexByte(s, '%') < 0 && utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func (id *compiledIdentity) match(c *Claims) bool {
	if c == nil {
		return false
	}
	if id.userName != "" && id.userName != c.UserName {
		return false
	}
	if id.processName != "" && id.processName != c.ProcessName {
		return false
	}
	if id.groupName != "" && !c.InGroup(id.groupName) {
		return false
	}
	if id.exePath != nil && !equalComponents(id.exePath, c.ProcessFullPath) {
		return false
	}
	return true
}

// components yields a path's components the way Rust's Path::components
// does for comparison: a leading "/" is one, repeated separators and
// interior "." are ignored.
func components(p string) iter.Seq[string] {
	return func(yield func(string) bool) {
		if strings.HasPrefix(p, "/") && !yield("/") {
			return
		}
		first := true
		for c := range strings.SplitSeq(p, "/") {
			skip := c == "" || (c == "." && !first)
			first = false
			if !skip && !yield(c) {
				return
			}
		}
	}
}

// equalComponents compares without collecting the caller's components: it
// runs on every request a rule with an exePath decides.
func equalComponents(want []string, path string) bool {
	n := 0
	for c := range components(path) {
		if n == len(want) || want[n] != c {
			return false
		}
		n++
	}
	return n == len(want)
}
