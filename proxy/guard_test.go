package proxy

import (
	"testing"

	"github.com/metadatasec/gpa/msp"
)

// TestCanonicalGuardUnderEveryMatcher: a target without a canonical form is
// refused with 400 before any matcher runs, under legacy and shadow too,
// even where the rules allow everything (Audit and a default allow, so a
// matcher's deny would still be forwarded). Under legacy alone,
// /metadata/instance/%c0%ae%c0%ae/... decodes lossily and was forwarded.
func TestCanonicalGuardUnderEveryMatcher(t *testing.T) {
	key := testKey(t, 3)
	host := newFakeHost(t)
	host.addKey(key)
	allowAll := map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "allow"},
	}
	tests := []struct {
		uri  string
		want int // 400: no canonical form; 200: forwarded
	}{
		{"/metadata/instance/%c0%ae%c0%ae/identity/oauth2/token", 400},
		{"/metadata/%C0%AE%C0%AE/identity/oauth2/token", 400},
		{"/metadata/instance%zz", 400},
		{"/metadata/instance%", 400},
		{"/metadata/instance%00/x", 400},
		{"/metadata/instance?api-version=%c0%ae", 400},
		{"/metadata/instance?x=%G0", 400},
		{"/metadata/instance/%ff", 400},
		// Targets with a canonical form go on to the matcher.
		{"/metadata/instance?api-version=2021-02-01", 200},
		{"/metadata/identity/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F", 200},
	}
	for _, m := range []msp.Matcher{msp.MatcherCanonical, msp.MatcherLegacy, msp.MatcherShadow} {
		t.Run(m.String(), func(t *testing.T) {
			p, err := msp.NewPolicy(allowAll, &msp.EvaluatorOptions{Matcher: m, ShadowDecider: msp.MatcherLegacy})
			if err != nil {
				t.Fatal(err)
			}
			snap := snapshotFor(t, 1, allowAll, &key)
			snap.Policy = p
			tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
			tp.snap.Store(snap)
			for _, tt := range tests {
				before := len(host.requests())
				resp := tp.raw(t, "GET "+tt.uri+" HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n")
				forwarded := len(host.requests()) - before
				if st := rawStatus(resp); st != tt.want || (forwarded != 0) != (tt.want == 200) {
					t.Errorf("%s: status %d, host saw %d; want %d", tt.uri, st, forwarded, tt.want)
				}
			}
		})
	}
}
