package policy

import (
	"cmp"
	"slices"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Outcome is one request decided by both matchers.
type Outcome struct {
	Canonical msp.Decision `json:"canonical"`
	Legacy    msp.Decision `json:"legacy"`
}

// Simulator decides requests under a candidate rule set with both
// matchers side by side.
type Simulator struct {
	canonical, legacy *msp.Policy
	endpoints         map[msp.Endpoint]bool
}

// NewSimulator compiles the candidate rule sets (endpoint → item) for both
// matchers.
func NewSimulator(items map[msp.Endpoint]*msp.AuthorizationItem) (*Simulator, error) {
	c, err := msp.NewPolicy(items, &msp.EvaluatorOptions{Matcher: msp.MatcherCanonical})
	if err != nil {
		return nil, err
	}
	l, err := msp.NewPolicy(items, &msp.EvaluatorOptions{Matcher: msp.MatcherLegacy})
	if err != nil {
		return nil, err
	}
	eps := map[msp.Endpoint]bool{}
	for ep, item := range items {
		if item != nil {
			eps[ep] = true
		}
	}
	return &Simulator{canonical: c, legacy: l, endpoints: eps}, nil
}

// Decide evaluates one request for ep with both matchers.
func (s *Simulator) Decide(ep msp.Endpoint, req *msp.Request) Outcome {
	return Outcome{Canonical: s.canonical.Evaluate(ep, req), Legacy: s.legacy.Evaluate(ep, req)}
}

// Change groups the replayed requests whose decision differs from what
// the agent actually did.
type Change struct {
	Exe        string      `json:"exe"`
	User       string      `json:"user"`
	PathPrefix string      `json:"pathPrefix"`
	Was        msp.Verdict `json:"was"`
	Now        msp.Verdict `json:"now"`
	Count      int         `json:"count"`
	// Example is one raw URL of the group.
	Example string `json:"example"`
}

// Report summarises a replay.
type Report struct {
	Total        int `json:"total"`
	Allowed      int `json:"allowed"`
	Audited      int `json:"audited"`
	Denied       int `json:"denied"`
	NotProtected int `json:"notProtected"`
	// NewlyDenied counts requests the agent forwarded (allowed or audited)
	// that the candidate would deny: what breaks when it is enforced.
	NewlyDenied int `json:"newlyDenied"`
	// OtherEndpoints counts records to protected endpoints the candidate
	// has no rule set for; they are not replayed.
	OtherEndpoints int `json:"otherEndpoints,omitempty"`
	// Changes are grouped by (exe, user, path prefix), largest first, and
	// within a count newly denied groups first.
	Changes []Change `json:"changes"`
	// Divergent counts requests the legacy matcher would decide otherwise.
	Divergent int `json:"divergent"`
}

// WouldDeny reports whether the candidate denies anything the agent let
// through: what gates a switch to Enforce. Requests the agent already
// refused (malformed, traversal, Enforce denials) do not count.
func (r *Report) WouldDeny() bool { return r.NewlyDenied > 0 }

// Replay decides every record under the candidate with the canonical
// matcher and compares with what the agent recorded.
func (s *Simulator) Replay(records []msp.AuditRecord) *Report {
	rep, _ := s.ReplayFrom(Records(records)) // a slice source cannot fail
	return rep
}

// ReplayFrom is Replay over a stream of records, for example AuditLogs: the
// memory it needs grows with the distinct changes, not with the records.
func (s *Simulator) ReplayFrom(src RecordSource) (*Report, error) {
	rep := &Report{}
	groups := map[Change]*Change{}
	err := src(func(r msp.AuditRecord) error {
		rec := &r
		ep := rec.Destination()
		if ep == msp.EndpointNone {
			rep.NotProtected++
			return nil
		}
		if !s.endpoints[ep] {
			rep.OtherEndpoints++
			return nil
		}
		rep.Total++
		req := rec.Request()
		out := s.Decide(ep, req)
		now := out.Canonical.Verdict
		switch now {
		case msp.VerdictAllow:
			rep.Allowed++
		case msp.VerdictAllowAudited:
			rep.Audited++
		default:
			rep.Denied++
		}
		if (out.Legacy.Verdict == msp.VerdictAllow) != (now == msp.VerdictAllow) {
			rep.Divergent++
		}
		was := rec.Verdict()
		if was.Forwarded() && now == msp.VerdictDeny {
			rep.NewlyDenied++
		}
		if was == now {
			return nil
		}
		key := Change{Exe: rec.ProcessFullPath, User: rec.UserName, PathPrefix: pathPrefix(req.RawURI, 2), Was: was, Now: now}
		g, ok := groups[key]
		if !ok {
			g = &Change{Exe: key.Exe, User: key.User, PathPrefix: key.PathPrefix, Was: was, Now: now, Example: rec.URL}
			groups[key] = g
		}
		g.Count++
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		rep.Changes = append(rep.Changes, *g)
	}
	slices.SortFunc(rep.Changes, func(a, b Change) int {
		return cmp.Or(
			cmp.Compare(b.Count, a.Count),
			cmp.Compare(a.Now, b.Now), // deny (0) first
			strings.Compare(a.Exe, b.Exe), strings.Compare(a.User, b.User), strings.Compare(a.PathPrefix, b.PathPrefix))
	})
	return rep, nil
}

// pathPrefix returns the first n segments of the canonical path, or the
// raw path when it does not canonicalise.
func pathPrefix(rawURI string, n int) string {
	p, _, _ := strings.Cut(rawURI, "?")
	cp, err := msp.CanonicalizePath(p)
	if err != nil {
		return p
	}
	if len(cp.Segments) > n+1 {
		cp.Segments = cp.Segments[:n+1]
	}
	cp.TrailingSlash = false
	return cp.String()
}
