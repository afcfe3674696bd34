package msp

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseLocalRulesFailsClosedOnBadFiles(t *testing.T) {
	tests := []struct{ name, in string }{
		{"malformed", `{"defaultAccess": "deny", "rules": `},
		{"bad defaultAccess", `{"defaultAccess": "maybe"}`},
		{"blank id", `{"id": "  "}`},
		{"dangling privilege", `{"rules":{"privileges":[],"roles":[{"name":"r","privileges":["nope"]}],"identities":[],"roleAssignments":[]}}`},
		{"identity without selector", `{"rules":{"privileges":[],"roles":[],"identities":[{"name":"i"}],"roleAssignments":[]}}`},
		{"duplicate privilege", `{"rules":{"privileges":[{"name":"p","path":"/a"},{"name":"p","path":"/b"}],"roles":[],"identities":[],"roleAssignments":[]}}`},
		{"blank path", `{"rules":{"privileges":[{"name":"p","path":" "}]}}`},
		{"trailing", `{} {}`},
		{"stray brace", `{"defaultAccess": "allow"}}`},
		// serde refuses a struct field given twice; encoding/json would keep the last.
		{"duplicate top-level key", `{"defaultAccess":"allow","defaultAccess":"deny"}`},
		{"duplicate key in a privilege", `{"rules":{"privileges":[{"name":"p","path":"/a","path":"/b"}]}}`},
		{"duplicate rules key", `{"rules":{"privileges":[]},"rules":{"roles":[]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseLocalRules([]byte(tt.in)); !errors.Is(err, ErrInvalidLocalRules) {
				t.Fatalf("err = %v, want ErrInvalidLocalRules", err)
			}
		})
	}
	// Tolerated: BOM, a mode (ignored), a repeated queryParameters member
	// (a map in upstream's reader: the last value wins).
	lr, err := ParseLocalRules(append([]byte{0xEF, 0xBB, 0xBF}, `{"defaultAccess":" Deny ","mode":"audit",
		"rules":{"privileges":[{"name":"p","path":"/a","queryParameters":{"k":"1","k":"2"}}]}}`...))
	if err != nil || *lr.DefaultAccess != " Deny " || lr.Rules.Privileges[0].QueryParameters["k"] != "2" {
		t.Fatalf("tolerated forms: %v %v", lr, err)
	}
}

// TestLocalRulesRoundTrip: what MarshalIndent writes, ParseLocalRules
// reads back field for field; renaming a JSON name breaks this test.
func TestLocalRulesRoundTrip(t *testing.T) {
	def, id := "allow", "local-id"
	in := &LocalRules{DefaultAccess: &def, ID: &id, Rules: &AccessControlRules{
		Privileges:      []Privilege{{Name: "instance", Path: "/metadata/instance", QueryParameters: map[string]string{"api-version": "2021-02-01"}}},
		Roles:           []Role{{Name: "reader", Privileges: []string{"instance"}}},
		Identities:      []Identity{{Name: "root", UserName: "root", GroupName: "wheel", ExePath: "/usr/bin/curl", ProcessName: "curl"}},
		RoleAssignments: []RoleAssignment{{Role: "reader", Identities: []string{"root"}}},
	}}
	b, err := in.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseLocalRules(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if diff := cmp.Diff(in, out, cmpopts.IgnoreUnexported(AccessControlRules{})); diff != "" {
		t.Errorf("read back (-written +read):\n%s", diff)
	}
}
