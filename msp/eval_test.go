package msp

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func rootClaims() *Claims {
	return &Claims{UserID: 0, UserName: "root", UserGroups: []string{"root"}, ProcessName: "curl",
		ProcessFullPath: "/usr/bin/curl", RunAsElevated: true}
}

func userClaims() *Claims {
	return &Claims{UserID: 1000, UserName: "alice", UserGroups: []string{"alice", "ops"}, ProcessName: "python3",
		ProcessFullPath: "/usr/bin/python3", RunAsElevated: false}
}

// oneRule allows privilege p to any caller whose userName is user.
func oneRule(mode Mode, def DefaultAccess, p Privilege, id Identity) *AuthorizationItem {
	return &AuthorizationItem{Mode: mode, DefaultAccess: def, ID: "rs1", Rules: &AccessControlRules{
		Privileges:      []Privilege{p},
		Roles:           []Role{{Name: "r", Privileges: []string{p.Name}}},
		Identities:      []Identity{id},
		RoleAssignments: []RoleAssignment{{Role: "r", Identities: []string{id.Name}}},
	}}
}

func mustCompile(t testing.TB, ep Endpoint, item *AuthorizationItem, m Matcher) *Evaluator {
	t.Helper()
	ev, err := Compile(ep, item, &EvaluatorOptions{Matcher: m})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// The unit-test truth table of §4.4: elevated caller, no privileges.
func TestEvaluateModeTruthTable(t *testing.T) {
	tests := []struct {
		mode Mode
		def  DefaultAccess
		want Verdict
	}{
		{ModeDisabled, AccessDeny, VerdictAllow},
		{ModeAudit, AccessAllow, VerdictAllow},
		{ModeAudit, AccessDeny, VerdictAllowAudited},
		{ModeEnforce, AccessAllow, VerdictAllow},
		{ModeEnforce, AccessDeny, VerdictDeny},
	}
	for _, ep := range Endpoints {
		for _, m := range []Matcher{MatcherLegacy, MatcherCanonical, MatcherShadow} {
			for _, tt := range tests {
				name := fmt.Sprintf("%s/%s/%s/%s", ep, m, tt.mode, tt.def)
				item := &AuthorizationItem{Mode: tt.mode, DefaultAccess: tt.def, ID: "x"}
				got := mustCompile(t, ep, item, m).Evaluate(&Request{Method: "GET", RawURI: "/machine?comp=goalstate", Claims: rootClaims()})
				if got.Verdict != tt.want {
					t.Errorf("%s: verdict = %v, want %v", name, got.Verdict, tt.want)
				}
			}
		}
	}
}

func TestEvaluateRootRequirement(t *testing.T) {
	allowAll := &AuthorizationItem{Mode: ModeAudit, DefaultAccess: AccessAllow, ID: "x"}
	tests := []struct {
		ep     Endpoint
		item   *AuthorizationItem
		claims *Claims
		method string
		uri    string
		want   Verdict
		reason Reason
	}{
		{EndpointWireServer, allowAll, userClaims(), "GET", "/machine", VerdictDeny, ReasonRootRequired},
		{EndpointHostGA, allowAll, userClaims(), "GET", "/status", VerdictDeny, ReasonRootRequired},
		{EndpointWireServer, nil, userClaims(), "GET", "/machine", VerdictDeny, ReasonRootRequired},
		{EndpointWireServer, &AuthorizationItem{Mode: ModeDisabled, ID: "x"}, userClaims(), "GET", "/machine", VerdictDeny, ReasonRootRequired},
		{EndpointWireServer, nil, nil, "GET", "/machine", VerdictDeny, ReasonRootRequired},
		{EndpointIMDS, allowAll, userClaims(), "GET", "/metadata/instance", VerdictAllow, ReasonDefault},
		{EndpointWireServer, nil, rootClaims(), "GET", "/machine", VerdictAllow, ReasonNoRules},
		// Skip-sig from root is allowed before any rule; from non-root it is not special.
		{EndpointWireServer, &AuthorizationItem{Mode: ModeEnforce, ID: "x"}, rootClaims(), "PUT", "/vmAgentLog", VerdictAllow, ReasonSkipSig},
		{EndpointWireServer, &AuthorizationItem{Mode: ModeEnforce, ID: "x"}, rootClaims(), "POST", "/machine/?comp=telemetrydata", VerdictAllow, ReasonSkipSig},
		{EndpointWireServer, &AuthorizationItem{Mode: ModeEnforce, ID: "x"}, rootClaims(), "GET", "/vmAgentLog", VerdictDeny, ReasonDefault},
		{EndpointIMDS, &AuthorizationItem{Mode: ModeEnforce, ID: "x"}, userClaims(), "PUT", "/vmAgentLog", VerdictDeny, ReasonDefault},
	}
	for i, tt := range tests {
		got := mustCompile(t, tt.ep, tt.item, MatcherCanonical).Evaluate(&Request{Method: tt.method, RawURI: tt.uri, Claims: tt.claims})
		if got.Verdict != tt.want || got.Reason != tt.reason {
			t.Errorf("%d %s %s: got %v/%v, want %v/%v", i, tt.ep, tt.uri, got.Verdict, got.Reason, tt.want, tt.reason)
		}
	}
}

func TestSkipSigURI(t *testing.T) {
	tests := []struct {
		method, uri string
		want        bool
	}{
		{"PUT", "/vmAgentLog", true},
		{"POST", "/machine/?comp=telemetrydata", true},
		{"GET", "/vmAgentLog", false},
		{"GET", "/machine/?comp=telemetrydata", false},
		{"PUT", "/vmAgentLog/x", false},
	}
	for _, tt := range tests {
		if got := SkipSigURI(tt.method, tt.uri); got != tt.want {
			t.Errorf("SkipSigURI(%s %s) = %v, want %v", tt.method, tt.uri, got, tt.want)
		}
	}
}

// Rule-match vectors of §4.5 (legacy) with the canonical outcome beside it.
func TestEvaluateRuleVectors(t *testing.T) {
	test := Privilege{Name: "p", Path: "/test", QueryParameters: map[string]string{"key1": "value1", "key2": "value2"}}
	token := Privilege{Name: "p", Path: "/metadata/identity/oauth2/token", QueryParameters: map[string]string{"resource": "https://management.azure.com/"}}
	anyRoot := Identity{Name: "i", UserName: "root"}
	tests := []struct {
		name       string
		priv       Privilege
		id         Identity
		uri        string
		claims     *Claims
		legacy     Verdict
		canon      Verdict
		canonError string
	}{
		{"query exact", test, anyRoot, "/test?key1=value1&key2=value2", nil, VerdictAllow, VerdictAllow, ""},
		{"encoded key", test, anyRoot, "/test?k%65y1=value1&key2=value2", nil, VerdictAllow, VerdictAllow, ""},
		{"encoded value", test, anyRoot, "/test?key1=valu%651&key2=value2", nil, VerdictAllow, VerdictAllow, ""},
		{"all encoded", test, anyRoot, "/test?k%65y1=valu%651&k%65y2=valu%652", nil, VerdictAllow, VerdictAllow, ""},
		{"wrong value", test, anyRoot, "/test?key1=value1&key2=value3", nil, VerdictDeny, VerdictDeny, ""},
		{"missing key", test, anyRoot, "/test?key1=value1", nil, VerdictDeny, VerdictDeny, ""},
		{"encoded wrong", test, anyRoot, "/test?k%65y1=value1&k%65y2=wrongvalue", nil, VerdictDeny, VerdictDeny, ""},
		{"no query rule", Privilege{Name: "p", Path: "/test"}, anyRoot, "/test?key1=value1&key2=value2", nil, VerdictAllow, VerdictAllow, ""},
		{"empty required values", Privilege{Name: "p", Path: "/test", QueryParameters: map[string]string{"key1": "", "key2": ""}}, anyRoot, "/test?key1=value1&key2=value2", nil, VerdictDeny, VerdictDeny, ""},
		{"token encoded", token, anyRoot, "/metadata/identity/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F", nil, VerdictAllow, VerdictAllow, ""},
		// KD-1: legacy honours an embedded query; canonical refuses it.
		{"token embedded", token, anyRoot, "/metadata/identity/oauth2/token%3Fresource=https%3A%2F%2Fmanagement.azure.com%2F", nil, VerdictAllow, VerdictDeny, "CANON_EMBQ"},
		{"encoded slash", Privilege{Name: "p", Path: "/metadata/identity"}, anyRoot, "/metadata%2Fidentity/x", nil, VerdictAllow, VerdictAllow, ""},
		{"encoded slash lower", Privilege{Name: "p", Path: "/metadata/identity"}, anyRoot, "/metadata%2fidentity/x", nil, VerdictAllow, VerdictAllow, ""},
		{"path case", Privilege{Name: "p", Path: "/test"}, anyRoot, "/tESt/test", nil, VerdictAllow, VerdictAllow, ""},
		// The legacy string prefix lets /test match /test-evil; canonical does not.
		{"string prefix", Privilege{Name: "p", Path: "/test"}, anyRoot, "/test-evil/x", nil, VerdictAllow, VerdictDeny, ""},
		{"processName case", Privilege{Name: "p", Path: "/"}, Identity{Name: "i", ProcessName: "Test"}, "/x", &Claims{ProcessName: "test"}, VerdictDeny, VerdictDeny, ""},
		{"exePath case", Privilege{Name: "p", Path: "/"}, Identity{Name: "i", ExePath: "TEST"}, "/x", &Claims{ProcessFullPath: "test"}, VerdictDeny, VerdictDeny, ""},
		{"non-UTF-8 process name", Privilege{Name: "p", Path: "/"}, Identity{Name: "i", ProcessName: "\uFFFD"}, "/x", &Claims{ProcessName: "\xff"}, VerdictDeny, VerdictDeny, ""},
		{"exePath components", Privilege{Name: "p", Path: "/"}, Identity{Name: "i", ExePath: "/usr/bin/curl"}, "/x", &Claims{ProcessFullPath: "/usr/bin//curl"}, VerdictAllow, VerdictAllow, ""},
		{"groupName", Privilege{Name: "p", Path: "/"}, Identity{Name: "i", GroupName: "ops"}, "/x", userClaims(), VerdictAllow, VerdictAllow, ""},
		{"homoglyph user", Privilege{Name: "p", Path: "/"}, Identity{Name: "i", UserName: "аlice"}, "/x", userClaims(), VerdictDeny, VerdictDeny, ""},
		{"dot segments", Privilege{Name: "p", Path: "/metadata/instance"}, anyRoot, "/metadata/x/../instance", nil, VerdictDeny, VerdictAllow, ""},
		{"double encoded", Privilege{Name: "p", Path: "/metadata/identity"}, anyRoot, "/metadata%252Fidentity", nil, VerdictDeny, VerdictDeny, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := tt.claims
			if claims == nil {
				claims = rootClaims()
			}
			item := oneRule(ModeEnforce, AccessDeny, tt.priv, tt.id)
			req := &Request{Method: "GET", RawURI: tt.uri, Claims: claims}
			l := mustCompile(t, EndpointIMDS, item, MatcherLegacy).Evaluate(req)
			if l.Verdict != tt.legacy {
				t.Errorf("legacy = %v (%v), want %v", l.Verdict, l.Reason, tt.legacy)
			}
			c := mustCompile(t, EndpointIMDS, item, MatcherCanonical).Evaluate(req)
			if c.Verdict != tt.canon {
				t.Errorf("canonical = %v (%v), want %v", c.Verdict, c.Reason, tt.canon)
			}
			if c.CanonError != tt.canonError {
				t.Errorf("canonical error = %q, want %q", c.CanonError, tt.canonError)
			}
		})
	}
}

func TestEvaluatePrivilegeWithoutIdentityDenies(t *testing.T) {
	item := oneRule(ModeEnforce, AccessAllow, Privilege{Name: "tok", Path: "/metadata/identity"}, Identity{Name: "admins", GroupName: "wheel"})
	for _, m := range []Matcher{MatcherLegacy, MatcherCanonical} {
		ev := mustCompile(t, EndpointIMDS, item, m)
		got := ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata/identity/oauth2/token", Claims: userClaims()})
		want := Decision{Verdict: VerdictDeny, Reason: ReasonNoIdentityMatched, Endpoint: EndpointIMDS, Mode: ModeEnforce, RuleSetID: "rs1", Privilege: "tok", Matcher: m}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", m, diff)
		}
		// Outside the privilege the default (allow) applies.
		got = ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata/instance", Claims: userClaims()})
		if got.Verdict != VerdictAllow || got.Reason != ReasonDefault {
			t.Errorf("%s: outside privilege = %v/%v, want allow/default", m, got.Verdict, got.Reason)
		}
	}
}

func TestEvaluateIncompleteRulesUseDefault(t *testing.T) {
	item, err := ParseAuthorizationItem([]byte(`{"defaultAccess":"allow","mode":"enforce","id":"x",
		"rules":{"privileges":[{"name":"p","path":"/a"}],"roles":[],"identities":[]}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := mustCompile(t, EndpointIMDS, item, MatcherLegacy).Evaluate(&Request{Method: "GET", RawURI: "/a", Claims: userClaims()})
	if got.Verdict != VerdictAllow || got.Reason != ReasonDefault {
		t.Errorf("got %v/%v, want allow/default (rules ignored without roleAssignments)", got.Verdict, got.Reason)
	}
	var ve *ValidationError
	if !errors.As(item.Validate(), &ve) || ve.Problems[0].Kind != ProblemIncompleteRules {
		t.Errorf("Validate = %v, want incomplete-rules", item.Validate())
	}
}

func TestEvaluateAuditIdentity(t *testing.T) {
	item := oneRule(ModeAudit, AccessDeny, Privilege{Name: "inst", Path: "/metadata/instance"}, Identity{Name: "curl", ExePath: "/usr/bin/curl"})
	ev := mustCompile(t, EndpointIMDS, item, MatcherCanonical)
	got := ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata/instance?api-version=2021-02-01", Claims: rootClaims()})
	want := Decision{Verdict: VerdictAllow, Reason: ReasonIdentityMatched, Endpoint: EndpointIMDS, Mode: ModeAudit, RuleSetID: "rs1", Privilege: "inst", Identity: "curl"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	got = ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata/versions", Claims: rootClaims()})
	if got.Verdict != VerdictAllowAudited {
		t.Errorf("audit denial = %v, want audit", got.Verdict)
	}
}

func TestShadowReportsDivergence(t *testing.T) {
	var mu sync.Mutex
	var divs []string
	item := oneRule(ModeEnforce, AccessDeny, Privilege{Name: "p", Path: "/metadata"}, Identity{Name: "i", UserName: "root"})
	for _, decider := range []Matcher{MatcherLegacy, MatcherCanonical} {
		divs = nil
		ev, err := Compile(EndpointIMDS, item, &EvaluatorOptions{Matcher: MatcherShadow, ShadowDecider: decider,
			OnDivergence: func(d Divergence) { mu.Lock(); divs = append(divs, d.String()); mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		got := ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata-attacker/x", Claims: rootClaims()})
		wantVerdict := VerdictAllow
		if decider == MatcherCanonical {
			wantVerdict = VerdictDeny
		}
		if got.Verdict != wantVerdict || !got.Divergent || got.Matcher != decider {
			t.Errorf("decider %s: got %+v", decider, got)
		}
		want := []string{`CANON_DIVERGENCE mode=shadow rule_set=rs1 legacy=allow canon=deny uri="/metadata-attacker/x"`}
		if diff := cmp.Diff(want, divs); diff != "" {
			t.Errorf("divergences (-want +got):\n%s", diff)
		}
		// Agreeing requests report nothing.
		divs = nil
		ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata/instance", Claims: rootClaims()})
		if len(divs) != 0 {
			t.Errorf("agreeing request reported %v", divs)
		}
	}
}

func TestCompileUncanonicalPrivilegeFails(t *testing.T) {
	item := oneRule(ModeEnforce, AccessAllow, Privilege{Name: "p", Path: "/a/%zz"}, Identity{Name: "i", UserName: "root"})
	_, err := Compile(EndpointIMDS, item, nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Problems[0].Kind != ProblemUncanonicalRule || !errors.Is(err, ErrInvalidRules) {
		t.Fatalf("err = %v, want uncanonical-rule", err)
	}
	if _, err := Compile(EndpointIMDS, item, &EvaluatorOptions{Matcher: MatcherLegacy}); err != nil {
		t.Errorf("legacy compile: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	p, err := NewPolicy(map[Endpoint]*AuthorizationItem{
		EndpointIMDS:       {Mode: ModeEnforce, DefaultAccess: AccessDeny, ID: "imds"},
		EndpointWireServer: {Mode: ModeAudit, DefaultAccess: AccessAllow, ID: "ws"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := []Mode{p.Mode(EndpointIMDS), p.Mode(EndpointWireServer), p.Mode(EndpointHostGA), p.Mode(EndpointNone)}
	if diff := cmp.Diff([]Mode{ModeEnforce, ModeAudit, ModeDisabled, ModeDisabled}, got); diff != "" {
		t.Errorf("modes (-want +got):\n%s", diff)
	}
	if d := p.Evaluate(EndpointIMDS, &Request{Method: "GET", RawURI: "/", Claims: rootClaims()}); d.Verdict != VerdictDeny || d.RuleSetID != "imds" {
		t.Errorf("imds = %+v", d)
	}
	var nilPolicy *Policy
	if d := nilPolicy.Evaluate(EndpointHostGA, &Request{Method: "GET", RawURI: "/", Claims: userClaims()}); d.Verdict != VerdictDeny {
		t.Errorf("nil policy hostga non-root = %v, want deny", d.Verdict)
	}
}

func TestDecisionJSONRoundTrip(t *testing.T) {
	for _, v := range []Verdict{VerdictDeny, VerdictAllow, VerdictAllowAudited} {
		for r := ReasonDefault; r <= ReasonNotProtected; r++ {
			in := Decision{Verdict: v, Reason: r, Endpoint: EndpointHostGA, Mode: ModeAudit, Matcher: MatcherShadow, CanonError: "CANON_PCT"}
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			var out Decision
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if diff := cmp.Diff(in, out); diff != "" {
				t.Errorf("(-in +out):\n%s", diff)
			}
		}
	}
	var v Verdict
	if err := v.UnmarshalText([]byte("maybe")); err == nil {
		t.Error("unknown verdict accepted")
	}
}

// The evaluator matches every proxied request: with a metadata-sized path
// and query it must not allocate (it did six times, 624 bytes, when the
// query was built into a map per request).
func TestEvaluateCanonicalAllocs(t *testing.T) {
	ev := mustCompile(t, EndpointIMDS, fiftyPrivileges(), MatcherCanonical)
	req := &Request{Method: "GET", RawURI: "/metadata/svc49/resource/x?api-version=2021-02-01&format=json", Claims: userClaims()}
	if d := ev.Evaluate(req); d.Verdict != VerdictAllow {
		t.Fatalf("decided %+v, want allow", d)
	}
	if n := testing.AllocsPerRun(100, func() { ev.Evaluate(req) }); n != 0 {
		t.Errorf("Evaluate allocates %v times per request, want 0", n)
	}
}

// Parameter pollution: a duplicated required key passes only when every
// value is allowed, whatever order the host reads them in.
func TestDuplicateQueryKeys(t *testing.T) {
	item := oneRule(ModeEnforce, AccessDeny, Privilege{Name: "gs", Path: "/machine", QueryParameters: map[string]string{"comp": "goalstate"}},
		Identity{Name: "root", UserName: "root"})
	tests := []struct {
		uri    string
		canon  Verdict
		legacy Verdict // upstream decides on the first occurrence
	}{
		{"/machine?comp=goalstate", VerdictAllow, VerdictAllow},
		{"/machine?comp=goalstate&comp=goalstate", VerdictAllow, VerdictAllow},
		{"/machine?comp=certificates&comp=goalstate", VerdictDeny, VerdictDeny},
		{"/machine?comp=goalstate&comp=certificates", VerdictDeny, VerdictAllow},
		{"/machine?comp=GOALSTATE&x=1", VerdictAllow, VerdictAllow},
		{"/machine?comp=goalstate&x=1&comp=certificates", VerdictDeny, VerdictAllow},
		{"/machine?x=goalstate", VerdictDeny, VerdictDeny},
		{"/machine?comp", VerdictDeny, VerdictDeny},
	}
	for _, tt := range tests {
		req := &Request{Method: "GET", RawURI: tt.uri, Claims: rootClaims()}
		if got := mustCompile(t, EndpointWireServer, item, MatcherCanonical).Evaluate(req).Verdict; got != tt.canon {
			t.Errorf("canonical %s = %v, want %v", tt.uri, got, tt.canon)
		}
		if got := mustCompile(t, EndpointWireServer, item, MatcherLegacy).Evaluate(req).Verdict; got != tt.legacy {
			t.Errorf("legacy %s = %v, want %v", tt.uri, got, tt.legacy)
		}
	}
}
