package msp

import (
	"fmt"
	"testing"
)

// A typical IMDS GET as the proxy signs it: 7 header lines, no body.
func benchMessage() *Message {
	return &Message{Method: "GET", RawURI: "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F",
		Header: hdrs("Host", "169.254.169.254", "User-Agent", "curl/8.5.0", "Accept", "*/*", "Metadata", "true",
			"Connection", "keep-alive",
			"x-ms-azure-host-claims", `{ "isRoot": "false"}`, "x-ms-azure-host-date", vectorDate)}
}

func BenchmarkSign(b *testing.B) {
	s, err := NewSigner(vectorKey(b))
	if err != nil {
		b.Fatal(err)
	}
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is a host checking the signature of benchMessage, with
// Verify and with a Verifier.
func BenchmarkVerify(b *testing.B) {
	k := vectorKey(b)
	s, err := NewSigner(k)
	if err != nil {
		b.Fatal(err)
	}
	m := benchMessage()
	authz, err := s.Sign(m)
	if err != nil {
		b.Fatal(err)
	}
	m.Set(HeaderAuthorization, authz)
	lookup := func(string) (Key, bool) { return k, true }
	v := NewVerifier(lookup)
	for _, tc := range []struct {
		name   string
		verify func() error
	}{
		{"func", func() error { _, err := Verify(m, lookup); return err }},
		{"Verifier", func() error { _, err := v.Verify(m); return err }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.verify(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func fiftyPrivileges() *AuthorizationItem {
	r := &AccessControlRules{}
	var names []string
	for i := range 50 {
		n := fmt.Sprintf("p%02d", i)
		names = append(names, n)
		r.Privileges = append(r.Privileges, Privilege{Name: n, Path: fmt.Sprintf("/metadata/svc%02d/resource", i),
			QueryParameters: map[string]string{"api-version": "2021-02-01"}})
	}
	r.Roles = []Role{{Name: "all", Privileges: names}}
	r.Identities = []Identity{{Name: "agent", ExePath: "/usr/bin/agent"}, {Name: "ops", GroupName: "ops"}}
	r.RoleAssignments = []RoleAssignment{{Role: "all", Identities: []string{"agent", "ops"}}}
	return &AuthorizationItem{Mode: ModeEnforce, DefaultAccess: AccessDeny, ID: "bench", Rules: r}
}

func BenchmarkEvaluate50(b *testing.B) {
	for _, m := range []Matcher{MatcherCanonical, MatcherLegacy, MatcherShadow} {
		b.Run(m.String(), func(b *testing.B) {
			ev, err := Compile(EndpointIMDS, fiftyPrivileges(), &EvaluatorOptions{Matcher: m})
			if err != nil {
				b.Fatal(err)
			}
			// The last privilege matches, so every one is tried.
			req := &Request{Method: "GET", RawURI: "/metadata/svc49/resource/x?api-version=2021-02-01&format=json", Claims: userClaims()}
			if d := ev.Evaluate(req); d.Verdict != VerdictAllow {
				b.Fatalf("bench request decided %+v", d)
			}
			b.ReportAllocs()
			for b.Loop() {
				ev.Evaluate(req)
			}
		})
	}
}

func BenchmarkCanonicalize(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Canonicalize("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"); err != nil {
			b.Fatal(err)
		}
	}
}
