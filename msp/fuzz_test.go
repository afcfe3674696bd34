package msp

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var pathSeeds = []string{"/", "", "/metadata/identity", "/metadata%2Fidentity", "/a/../..", "/x%C0%AFy",
	"/metadata/%252e%252e/identity", "/a;b/c;d=e", "/x%3Fy", "/caf%C3%A9", "/abc%2", "///a//b/", "/a%20b%25c"}

func FuzzCanonicalizePath(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := CanonicalizePath(raw)
		if err != nil {
			if _, ok := err.(*CanonError); !ok {
				t.Fatalf("error %v is not a *CanonError", err)
			}
			return
		}
		if len(p.Segments) == 0 || p.Segments[0] != "" {
			t.Fatalf("segments %q do not start at the root", p.Segments)
		}
		// The canonical form is a fixed point.
		again, err := CanonicalizePath(p.EscapedString())
		if err != nil {
			t.Fatalf("canonical form %q does not canonicalise: %v", p.EscapedString(), err)
		}
		if diff := cmp.Diff(p.Segments, again.Segments); diff != "" {
			t.Fatalf("not idempotent for %q (-first +second):\n%s", raw, diff)
		}
	})
}

func FuzzCanonicalizeQuery(f *testing.F) {
	for _, s := range []string{"a=1&b=2", "API-Version=2018", "k=a+b", "=v&k", "k=%E4%B8%AD", "k=%2", "k=%0A", "a=%26&b=%3D"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := CanonicalizeQuery(raw)
		if err != nil {
			if _, ok := err.(*CanonError); !ok {
				t.Fatalf("error %v is not a *CanonError", err)
			}
			return
		}
		again, err := CanonicalizeQuery(q.String())
		if err != nil {
			t.Fatalf("canonical form %q does not canonicalise: %v", q.String(), err)
		}
		if q.String() != again.String() {
			t.Fatalf("not idempotent: %q then %q", q.String(), again.String())
		}
	})
}

func FuzzStringToSign(f *testing.F) {
	for _, v := range signVectors {
		var hv string
		if len(v.msg.Header) > 0 {
			hv = v.msg.Header[0].Value
		}
		f.Add(v.msg.Method, v.msg.RawURI, "X-Test", hv, v.msg.Body)
	}
	k, err := NewKey("fuzz", vectorKeyHex)
	if err != nil {
		f.Fatal(err)
	}
	signer, err := NewSigner(k)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, uri, name, value string, body []byte) {
		m := &Message{Method: method, RawURI: uri, Body: body,
			Header: []HeaderField{{"Host", "h"}, {name, value}, {"x-ms-azure-host-date", "Wed, 23 Apr 2025 12:00:00 GMT"}}}
		authz, err := signer.Sign(m)
		if err != nil {
			return
		}
		m.Set(HeaderAuthorization, authz)
		if _, err := Verify(m, func(string) (Key, bool) { return k, true }); err != nil {
			t.Fatalf("a message signed by Sign does not verify: %v", err)
		}
	})
}

func FuzzParseAuthorizationItem(f *testing.F) {
	f.Add([]byte(`{"defaultAccess":"deny","mode":"enforce","id":"x","rules":{"privileges":[{"name":"p","path":"/a","queryParameters":{"k":"v"}}],"roles":[{"name":"r","privileges":["p"]}],"identities":[{"name":"i","userName":"root"}],"roleAssignments":[{"role":"r","identities":["i"]}]}}`))
	f.Add([]byte(`{"defaultAccess":"allow","mode":"audit","id":""}`))
	f.Add([]byte(`{"mode":"x"}`))
	f.Add([]byte("\xef\xbb\xbf{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		item, err := ParseAuthorizationItem(data)
		if err != nil {
			return
		}
		_ = item.Validate()
		for _, m := range []Matcher{MatcherLegacy, MatcherCanonical, MatcherShadow} {
			ev, err := Compile(EndpointIMDS, item, &EvaluatorOptions{Matcher: m})
			if err != nil {
				continue
			}
			ev.Evaluate(&Request{Method: "GET", RawURI: "/metadata/instance?x=1", Claims: rootClaims()})
		}
		out, err := json.Marshal(item)
		if err != nil {
			t.Fatalf("parsed item does not marshal: %v", err)
		}
		back, err := ParseAuthorizationItem(out)
		if err != nil {
			t.Fatalf("marshalled item does not parse: %v\n%s", err, out)
		}
		if diff := cmp.Diff(item.Rules.Complete(), back.Rules.Complete()); item.Rules != nil && diff != "" && item.Rules.Complete() {
			t.Fatalf("completeness changed: %s", diff)
		}
	})
}

// FuzzCanonicalDecisionStable is the property of the canonical matcher:
// whatever spelling a request uses, it is never allowed where its canonical
// form is denied (and vice versa).
func FuzzCanonicalDecisionStable(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s, "api-version=2018-02-01&resource=https://management.azure.com/")
	}
	f.Add("/metadata/identity/oauth2/token", "resource=https%3A%2F%2Fmanagement.azure.com%2F")
	f.Add("/METADATA/identity;x=1/oauth2/./token", "RESOURCE=https://management.azure.com/")
	item := &AuthorizationItem{Mode: ModeEnforce, DefaultAccess: AccessDeny, ID: "prop", Rules: &AccessControlRules{
		Privileges: []Privilege{
			{Name: "token", Path: "/metadata/identity/oauth2/token", QueryParameters: map[string]string{"resource": "https://management.azure.com/"}},
			{Name: "instance", Path: "/metadata/instance"},
		},
		Roles:           []Role{{Name: "r", Privileges: []string{"token", "instance"}}},
		Identities:      []Identity{{Name: "root", UserName: "root"}},
		RoleAssignments: []RoleAssignment{{Role: "r", Identities: []string{"root"}}},
	}}
	ev, err := Compile(EndpointIMDS, item, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		uri := path
		if query != "" {
			uri += "?" + query
		}
		raw := ev.Evaluate(&Request{Method: "GET", RawURI: uri, Claims: rootClaims()})
		cr, err := Canonicalize("GET", uri)
		if err != nil {
			if raw.Verdict != VerdictDeny {
				t.Fatalf("%q cannot be canonicalised but was %v", uri, raw.Verdict)
			}
			return
		}
		canon := ev.Evaluate(&Request{Method: "GET", RawURI: cr.String(), Claims: rootClaims()})
		if raw.Verdict != canon.Verdict {
			t.Fatalf("%q decided %v, its canonical form %q decided %v", uri, raw.Verdict, cr.String(), canon.Verdict)
		}
	})
}
