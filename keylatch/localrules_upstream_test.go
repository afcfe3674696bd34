package keylatch

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/metadatasec/gpa/msp"
)

// TestLocalRulesUpstreamScenarios replays upstream's local-rules scenarios
// (its local_rules.rs tests and the pen-test's phase 4b, gpa-protocol
// §10.1) through ApplyLocalRules and the legacy matcher, which is what
// decides upstream. Each row names upstream's expected answer: 200 when
// the request is forwarded, 403 when refused.
func TestLocalRulesUpstreamScenarios(t *testing.T) {
	// The pen-test's preconditions: the host's item is Enforce and its id
	// asks for local rules.
	id := b64(`{"id":"pentest","useLocalFileRules":true}`)
	remoteIMDS := &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: id}
	remoteWS := &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: id}
	curl := &msp.Claims{UserName: "root", UserGroups: []string{"root"}, ProcessName: "curl", ProcessFullPath: "/usr/bin/curl", RunAsElevated: true}
	python := &msp.Claims{UserName: "root", UserGroups: []string{"root"}, ProcessName: "python3", ProcessFullPath: "/usr/bin/python3", RunAsElevated: true}
	const rootInstance = `{"defaultAccess":"deny","rules":{
	  "privileges":[{"name":"instance","path":"/metadata/instance"}],
	  "roles":[{"name":"reader","privileges":["instance"]}],
	  "identities":[{"name":"me","userName":"root"}],
	  "roleAssignments":[{"role":"reader","identities":["me"]}]}}`
	withIdentity := func(identity string) string {
		return `{"defaultAccess":"deny","rules":{
	  "privileges":[{"name":"instance","path":"/metadata/instance"}],
	  "roles":[{"name":"reader","privileges":["instance"]}],
	  "identities":[` + identity + `],
	  "roleAssignments":[{"role":"reader","identities":["me"]}]}}`
	}
	const queryRule = `{"defaultAccess":"deny","rules":{
	  "privileges":[{"name":"instance","path":"/metadata/instance","queryParameters":{"api-version":"2021-02-01"}}],
	  "roles":[{"name":"reader","privileges":["instance"]}],
	  "identities":[{"name":"me","userName":"root"}],
	  "roleAssignments":[{"role":"reader","identities":["me"]}]}}`
	const goalState = `{"defaultAccess":"deny","rules":{
	  "privileges":[{"name":"gs","path":"/machine","queryParameters":{"comp":"goalstate"}}],
	  "roles":[{"name":"r","privileges":["gs"]}],
	  "identities":[{"name":"me","userName":"root"}],
	  "roleAssignments":[{"role":"r","identities":["me"]}]}}`
	const token = "/metadata/identity/oauth2/token?resource=https://management.azure.com/"
	tests := []struct {
		name   string
		ep     msp.Endpoint
		remote *msp.AuthorizationItem
		file   string // "" = no file
		uri    string
		caller *msp.Claims
		want   int
	}{
		{"S1 disabled+allow file", msp.EndpointIMDS, remoteIMDS, `{"mode":"disabled","defaultAccess":"allow"}`, "/metadata/instance", curl, 200},
		{"S2 deny, no rules", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"deny"}`, "/metadata/instance", curl, 403},
		{"S3 local mode=audit ignored", msp.EndpointIMDS, remoteIMDS, `{"mode":"audit","defaultAccess":"deny"}`, "/metadata/instance", curl, 403},
		{"S4 instance allowed", msp.EndpointIMDS, remoteIMDS, rootInstance, "/metadata/instance?api-version=2021-02-01", curl, 200},
		{"S4 token refused", msp.EndpointIMDS, remoteIMDS, rootInstance, token, curl, 403},
		{"S4 versions refused", msp.EndpointIMDS, remoteIMDS, rootInstance, "/metadata/versions", curl, 403},
		{"S5 wrong identity", msp.EndpointIMDS, remoteIMDS, withIdentity(`{"name":"me","userName":"nobody"}`), "/metadata/instance", curl, 403},
		{"S6 %2F", msp.EndpointIMDS, remoteIMDS, rootInstance, "/metadata/identity%2Foauth2%2Ftoken", curl, 403},
		{"S6 %2f", msp.EndpointIMDS, remoteIMDS, rootInstance, "/metadata/identity%2foauth2%2ftoken", curl, 403},
		{"S6 %252F", msp.EndpointIMDS, remoteIMDS, rootInstance, "/metadata/identity%252Foauth2%252Ftoken", curl, 403},
		{"S6 %3F", msp.EndpointIMDS, remoteIMDS, rootInstance, "/metadata/identity/oauth2/token%3Fresource=x", curl, 403},
		{"WS-S6 comp=GOALSTATE", msp.EndpointWireServer, remoteWS, goalState, "/machine/?comp=GOALSTATE", curl, 200},
		{"WS-S6 comp=Certificates", msp.EndpointWireServer, remoteWS, goalState, "/machine/?comp=Certificates", curl, 403},
		{"S7 query match", msp.EndpointIMDS, remoteIMDS, queryRule, "/metadata/instance?api-version=2021-02-01", curl, 200},
		{"S7 query missing", msp.EndpointIMDS, remoteIMDS, queryRule, "/metadata/instance", curl, 403},
		{"S7 query wrong", msp.EndpointIMDS, remoteIMDS, queryRule, "/metadata/instance?api-version=2019-01-01", curl, 403},
		{"S7 extra parameter", msp.EndpointIMDS, remoteIMDS, queryRule, "/metadata/instance?api-version=2021-02-01&format=json", curl, 200},
		{"S8 groupName only", msp.EndpointIMDS, remoteIMDS, withIdentity(`{"name":"me","groupName":"root"}`), "/metadata/instance", curl, 200},
		{"S9 exePath curl", msp.EndpointIMDS, remoteIMDS, withIdentity(`{"name":"me","exePath":"/usr/bin/curl"}`), "/metadata/instance", curl, 200},
		{"S9 exePath python", msp.EndpointIMDS, remoteIMDS, withIdentity(`{"name":"me","exePath":"/usr/bin/curl"}`), "/metadata/instance", python, 403},
		{"S10 malformed JSON", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"allow",`, "/metadata/instance", curl, 403},
		{"S11 BOM, deny document", msp.EndpointIMDS, remoteIMDS, "\ufeff" + `{"defaultAccess":"deny"}`, "/metadata/instance", curl, 403},
		{"S11 BOM, allow document", msp.EndpointIMDS, remoteIMDS, "\ufeff" + `{"defaultAccess":"allow"}`, "/metadata/instance", curl, 200},
		// Upstream's reader decodes UTF-16 and UTF-32 too (json_read_from_file).
		{"UTF-16LE allow document", msp.EndpointIMDS, remoteIMDS, "\xff\xfe" + string([]byte{'{', 0, '"', 0, 'd', 0, 'e', 0, 'f', 0, 'a', 0, 'u', 0, 'l', 0, 't', 0, 'A', 0, 'c', 0, 'c', 0, 'e', 0, 's', 0, 's', 0, '"', 0, ':', 0, '"', 0, 'a', 0, 'l', 0, 'l', 0, 'o', 0, 'w', 0, '"', 0, '}', 0}), "/metadata/instance", curl, 200},
		{"UTF-16LE deny document", msp.EndpointIMDS, remoteIMDS, "\xff\xfe" + string([]byte{'{', 0, '"', 0, 'd', 0, 'e', 0, 'f', 0, 'a', 0, 'u', 0, 'l', 0, 't', 0, 'A', 0, 'c', 0, 'c', 0, 'e', 0, 's', 0, 's', 0, '"', 0, ':', 0, '"', 0, 'd', 0, 'e', 0, 'n', 0, 'y', 0, '"', 0, '}', 0}), "/metadata/instance", curl, 403},
		// serde refuses the file; last-wins would give allow.
		{"S12 duplicate key", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"deny","defaultAccess":"allow"}`, "/metadata/instance", curl, 403},
		{"S17 names already prefixed", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"deny","rules":{
		  "privileges":[{"name":"LocalFileRules_p","path":"/metadata/instance"}],
		  "roles":[{"name":"LocalFileRules_r","privileges":["LocalFileRules_p"]}],
		  "identities":[{"name":"LocalFileRules_i","userName":"root"}],
		  "roleAssignments":[{"role":"LocalFileRules_r","identities":["LocalFileRules_i"]}]}}`, "/metadata/instance", curl, 200},
		{"S18 dangling role reference", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"allow","rules":{
		  "privileges":[],"roles":[{"name":"r","privileges":["nope"]}],"identities":[],"roleAssignments":[]}}`, "/metadata/instance", curl, 403},
		{"S19 Cyrillic homoglyph", msp.EndpointIMDS, remoteIMDS, withIdentity(`{"name":"me","userName":"r\u043e\u043et"}`), "/metadata/instance", curl, 403},
		{"S20 deny-all, token", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"deny"}`, token, curl, 403},
		{"S20 deny-all, dot segments", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"deny"}`, "/metadata/instance/../identity/oauth2/token", curl, 403},
		// local_rules.rs: a missing file leaves the host's rules in force.
		{"file missing: remote allow", msp.EndpointIMDS, remoteIMDS, "", token, curl, 200},
		// A rules block is used only with all four lists (§4.5): without
		// roleAssignments only defaultAccess applies, so allow.
		{"incomplete block: defaultAccess only", msp.EndpointIMDS, remoteIMDS, `{"defaultAccess":"allow","rules":{
		  "privileges":[{"name":"instance","path":"/metadata/instance"}],
		  "roles":[{"name":"reader","privileges":["instance"]}],
		  "identities":[{"name":"me","userName":"nobody"}]}}`, "/metadata/instance", curl, 200},
		{"remote complete rules + local defaultAccess", msp.EndpointIMDS, &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: id,
			Rules: &msp.AccessControlRules{Privileges: []msp.Privilege{{Name: "t", Path: "/metadata/identity"}}, Roles: []msp.Role{{Name: "r", Privileges: []string{"t"}}},
				Identities: []msp.Identity{{Name: "i", UserName: "root"}}, RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"i"}}}}},
			`{"defaultAccess":"deny"}`, token, curl, 200},
		// A local id that is not a descriptor: no local rules at all.
		{"plain remote id ignores the file", msp.EndpointIMDS, &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "plain"}, `{"defaultAccess":"deny"}`, "/metadata/instance", curl, 200},
		{"descriptor with spaces still enables the file", msp.EndpointIMDS, &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: " " + id + " "}, `{"defaultAccess":"deny"}`, "/metadata/instance", curl, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := func(string) ([]byte, error) {
				if tt.file == "" {
					return nil, fs.ErrNotExist
				}
				return []byte(tt.file), nil
			}
			res := ApplyLocalRules(tt.remote, IMDSRulesFile, read)
			ev, err := msp.Compile(tt.ep, res.Item, &msp.EvaluatorOptions{Matcher: msp.MatcherLegacy})
			if err != nil {
				t.Fatal(err)
			}
			got := 403
			if ev.Evaluate(&msp.Request{Method: "GET", RawURI: tt.uri, Claims: tt.caller}).Verdict.Forwarded() {
				got = 200
			}
			if got != tt.want {
				t.Errorf("%s %s: got %d, upstream gives %d (item %+v, err %v)", tt.ep, tt.uri, got, tt.want, res.Item, res.Err)
			}
		})
	}
}

// TestLocalRulesRetries: upstream reads a file that is not JSON up to three
// times, 50 ms apart, and fails at once on one that parses but is invalid.
func TestLocalRulesRetries(t *testing.T) {
	remote := &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: b64(`{"id":"d","useLocalFileRules":true}`)}
	tests := []struct {
		name      string
		contents  []string // one per attempt; the last repeats
		wantReads int
		used      bool
	}{
		{"half-written file settles on the second read", []string{`{"defaultAc`, `{"defaultAccess":"allow"}`}, 2, true},
		{"never JSON: three reads, then fail closed", []string{`{`}, 3, false},
		{"valid JSON, invalid rules: one read", []string{`{"defaultAccess":"maybe"}`}, 1, false},
		{"duplicate key: retried like any parse error", []string{`{"id":"a","id":"b"}`}, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reads := 0
			read := func(string) ([]byte, error) {
				c := tt.contents[min(reads, len(tt.contents)-1)]
				reads++
				return []byte(c), nil
			}
			res := ApplyLocalRules(remote, IMDSRulesFile, read)
			if reads != tt.wantReads || res.Used != tt.used || (res.Err == nil) != tt.used {
				t.Fatalf("reads %d used %v err %v; want reads %d used %v", reads, res.Used, res.Err, tt.wantReads, tt.used)
			}
			if !tt.used && !errors.Is(res.Err, msp.ErrInvalidLocalRules) {
				t.Fatalf("err %v does not wrap ErrInvalidLocalRules", res.Err)
			}
		})
	}
}
