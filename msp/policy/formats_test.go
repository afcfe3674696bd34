package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func sampleItem() *msp.AuthorizationItem {
	return &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "rs", Rules: &msp.AccessControlRules{
		Privileges:      []msp.Privilege{{Name: "tok", Path: "/metadata/identity/oauth2/token", QueryParameters: map[string]string{"resource": "https://management.azure.com/"}}},
		Roles:           []msp.Role{{Name: "r", Privileges: []string{"tok"}}},
		Identities:      []msp.Identity{{Name: "curl", ExePath: "/usr/bin/curl"}},
		RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"curl"}}},
	}}
}

func TestRulesFormatsRoundTrip(t *testing.T) {
	for _, f := range []Format{FormatItem, FormatLocal, FormatGallery} {
		t.Run(f.String(), func(t *testing.T) {
			in := sampleItem()
			if f == FormatGallery {
				in.ID = "gallery" // the body has no id; the resource name is the id
			}
			b, err := WriteRules(in, f, "westeurope")
			if err != nil {
				t.Fatal(err)
			}
			out, got, err := ReadRules(b, msp.ModeEnforce)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if got != f {
				t.Errorf("detected %v, want %v", got, f)
			}
			// Compare through JSON: the parsed rules also remember which
			// lists were present.
			want, _ := WriteRules(in, FormatItem, "")
			have, _ := WriteRules(out, FormatItem, "")
			if diff := cmp.Diff(string(want), string(have)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadRulesShapes(t *testing.T) {
	gallery := `{"location":"x","properties":{"mode":"Audit","defaultAccess":"Allow"}}`
	item, f, err := ReadRules([]byte(gallery), msp.ModeDisabled)
	if err != nil || f != FormatGallery || item.Mode != msp.ModeAudit || item.DefaultAccess != msp.AccessAllow {
		t.Errorf("gallery: %+v %v %v", item, f, err)
	}
	// A local file's own mode is ignored: the remote mode applies (§4.8 S3).
	local := "\xEF\xBB\xBF" + `{"mode":"audit","defaultAccess":"allow"}`
	item, f, err = ReadRules([]byte(local), msp.ModeEnforce)
	if err != nil || f != FormatLocal || item.Mode != msp.ModeEnforce || item.ID != "local" || item.DefaultAccess != msp.AccessAllow {
		t.Errorf("local: %+v %v %v", item, f, err)
	}
	for _, bad := range []string{`{`, `{"properties":{"mode":"Sometimes","defaultAccess":"Deny"}}`, `{"mode":"x","id":"y","defaultAccess":"deny"}`, `{"defaultAccess":"perhaps"}`} {
		if _, _, err := ReadRules([]byte(bad), msp.ModeEnforce); !errors.Is(err, ErrBadRules) {
			t.Errorf("ReadRules(%s) err = %v", bad, err)
		}
	}
	b, _ := WriteRules(sampleItem(), FormatGallery, "eastus")
	if !strings.Contains(string(b), `"mode": "Enforce"`) || !strings.Contains(string(b), `"defaultAccess": "Deny"`) {
		t.Errorf("gallery body uses ARM's capitalised values:\n%s", b)
	}
}
