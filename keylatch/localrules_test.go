package keylatch

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestRuleDescriptor(t *testing.T) {
	tests := []struct {
		id      string
		want    RuleDescriptor
		display string
	}{
		{b64(`{"id":"decoded-id","useLocalFileRules":true}`), RuleDescriptor{"decoded-id", true, true}, "decoded-id-useLocalFileRules-true"},
		{b64(`{"id":"x"}`), RuleDescriptor{"x", false, true}, "x-useLocalFileRules-false"},
		// A descriptor without a logical id: upstream leaves the id as is.
		{b64(`{"useLocalFileRules":true}`), RuleDescriptor{"", true, true}, b64(`{"useLocalFileRules":true}`)},
		{b64(`{}`), RuleDescriptor{"", false, true}, b64(`{}`)},
		// A plain id is upstream's logical id: shown with -useLocalFileRules-false.
		{"/subscriptions/s/galleries/g", RuleDescriptor{LogicalID: "/subscriptions/s/galleries/g"}, "/subscriptions/s/galleries/g-useLocalFileRules-false"},
		{b64(`[1,2]`), RuleDescriptor{LogicalID: b64(`[1,2]`)}, b64(`[1,2]`) + "-useLocalFileRules-false"},
		{b64(`"str"`), RuleDescriptor{LogicalID: b64(`"str"`)}, b64(`"str"`) + "-useLocalFileRules-false"},
		{"abcd", RuleDescriptor{LogicalID: "abcd"}, "abcd-useLocalFileRules-false"}, // valid base64, not JSON
		{"", RuleDescriptor{}, ""},
		{"   ", RuleDescriptor{}, "   "},
		// Spaces around the descriptor are trimmed before decoding.
		{"  " + b64(`{"id":"t","useLocalFileRules":true}`) + "\n", RuleDescriptor{"t", true, true}, "t-useLocalFileRules-true"},
		// serde refuses a wrong type or a field given twice: a plain id, local rules off.
		{b64(`{"id":"x","useLocalFileRules":"true"}`), RuleDescriptor{LogicalID: b64(`{"id":"x","useLocalFileRules":"true"}`)}, b64(`{"id":"x","useLocalFileRules":"true"}`) + "-useLocalFileRules-false"},
		{b64(`{"id":"x","useLocalFileRules":true,"useLocalFileRules":true}`), RuleDescriptor{LogicalID: b64(`{"id":"x","useLocalFileRules":true,"useLocalFileRules":true}`)}, b64(`{"id":"x","useLocalFileRules":true,"useLocalFileRules":true}`) + "-useLocalFileRules-false"},
		// Unknown fields are ignored, as serde does by default.
		{b64(`{"id":"x","useLocalFileRules":true,"extra":1}`), RuleDescriptor{"x", true, true}, "x-useLocalFileRules-true"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ParseRuleDescriptor(tt.id)); diff != "" {
			t.Errorf("ParseRuleDescriptor(%q) (-want +got):\n%s", tt.id, diff)
		}
		if got := DisplayID(tt.id); got != tt.display {
			t.Errorf("DisplayID(%q) = %q, want %q", tt.id, got, tt.display)
		}
	}
}

const localAllowInstance = `{
  "defaultAccess": "deny",
  "id": "local-id",
  "mode": "disabled",
  "rules": {
    "privileges": [{"name": "instance", "path": "/metadata/instance"}],
    "roles": [{"name": "reader", "privileges": ["instance"]}],
    "identities": [{"name": "root", "userName": "root"}],
    "roleAssignments": [{"role": "reader", "identities": ["root"]}]
  }
}`

func TestMergeLocalRules(t *testing.T) {
	remote := &msp.AuthorizationItem{
		Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: b64(`{"id":"decoded-id","useLocalFileRules":true}`),
		Rules: &msp.AccessControlRules{
			Privileges:      []msp.Privilege{{Name: "token", Path: "/metadata/identity"}},
			Roles:           []msp.Role{{Name: "r", Privileges: []string{"token"}}},
			Identities:      []msp.Identity{{Name: "svc", UserName: "svc"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"svc"}}},
		},
	}
	lr, err := msp.ParseLocalRules([]byte(localAllowInstance))
	if err != nil {
		t.Fatal(err)
	}
	got := MergeLocalRules(remote, DisplayID(remote.ID), lr)
	want := &msp.AuthorizationItem{
		Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "decoded-id-useLocalFileRules-true_local-id",
		Rules: &msp.AccessControlRules{
			Privileges: []msp.Privilege{{Name: "token", Path: "/metadata/identity"}, {Name: "LocalFileRules_instance", Path: "/metadata/instance"}},
			Roles:      []msp.Role{{Name: "r", Privileges: []string{"token"}}, {Name: "LocalFileRules_reader", Privileges: []string{"LocalFileRules_instance"}}},
			Identities: []msp.Identity{{Name: "svc", UserName: "svc"}, {Name: "LocalFileRules_root", UserName: "root"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"svc"}},
				{Role: "LocalFileRules_reader", Identities: []string{"LocalFileRules_root"}}},
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(msp.AccessControlRules{})); diff != "" {
		t.Fatalf("merge (-want +got):\n%s", diff)
	}
	if !got.Rules.Complete() {
		t.Fatal("merged rules of two complete documents are not complete")
	}
}

func TestApplyLocalRules(t *testing.T) {
	desc := b64(`{"id":"d","useLocalFileRules":true}`)
	read := func(content string, err error) func(string) ([]byte, error) {
		return func(string) ([]byte, error) { return []byte(content), err }
	}
	remote := &msp.AuthorizationItem{Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: desc}
	tests := []struct {
		name     string
		remote   *msp.AuthorizationItem
		read     func(string) ([]byte, error)
		wantID   string
		wantDef  msp.DefaultAccess
		wantMode msp.Mode
		used     bool
		err      bool
	}{
		{"no descriptor: plain id", &msp.AuthorizationItem{Mode: msp.ModeEnforce, ID: "plain"}, read("", errors.New("must not be read")), "plain-useLocalFileRules-false", msp.AccessDeny, msp.ModeEnforce, false, false},
		{"file missing", remote, read("", fs.ErrNotExist), "d-useLocalFileRules-true", msp.AccessAllow, msp.ModeAudit, false, false},
		{"file used", remote, read(`{"defaultAccess":"deny","id":"L"}`, nil), "d-useLocalFileRules-true_L", msp.AccessDeny, msp.ModeAudit, true, false},
		{"bad file keeps remote mode, denies", remote, read(`{`, nil), "d-useLocalFileRules-true", msp.AccessDeny, msp.ModeAudit, false, true},
		{"unreadable file", remote, read("", errors.New("permission denied")), "d-useLocalFileRules-true", msp.AccessDeny, msp.ModeAudit, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := ApplyLocalRules(tt.remote, IMDSRulesFile, tt.read)
			if res.Item.ID != tt.wantID || res.Item.DefaultAccess != tt.wantDef || res.Item.Mode != tt.wantMode || res.Used != tt.used || (res.Err != nil) != tt.err {
				t.Fatalf("got id=%q def=%s mode=%s used=%v err=%v", res.Item.ID, res.Item.DefaultAccess, res.Item.Mode, res.Used, res.Err)
			}
			if tt.err && res.Item.Rules != nil {
				t.Fatal("fail-closed item kept rules")
			}
		})
	}
}

// TestLatcherLocalRules runs the whole path: the host's IMDS id asks for
// local rules, the file narrows access, and a broken file fails closed.
func TestLatcherLocalRules(t *testing.T) {
	rules := enforceAll()
	rules[msp.EndpointIMDS] = &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: b64(`{"id":"imds-profile","useLocalFileRules":true}`)}
	r := newRig(t, &msptest.Options{Rules: rules}, func(o *LatcherOptions) { o.LocalRules = true })
	rulesDir := r.store.RulesDir()
	if err := os.Mkdir(rulesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(rulesDir, IMDSRulesFile)
	writeRaw(t, path, []byte(localAllowInstance), 0o600)

	root := &msp.Claims{UserName: "root", RunAsElevated: true}
	other := &msp.Claims{UserName: "alice"}
	decide := func(uri string, c *msp.Claims) msp.Verdict {
		return r.latcher.Current().Policy.Evaluate(msp.EndpointIMDS, &msp.Request{Method: "GET", RawURI: uri, Claims: c}).Verdict
	}
	r.latcher.Poll(context.Background())
	s1 := r.latcher.Current()
	if got := s1.RuleIDs[msp.EndpointIMDS]; got != "imds-profile-useLocalFileRules-true_local-id" {
		t.Fatalf("imds rule id %q", got)
	}
	if decide("/metadata/instance", root) != msp.VerdictAllow || decide("/metadata/instance", other) == msp.VerdictAllow ||
		decide("/metadata/identity/oauth2/token", root) == msp.VerdictAllow {
		t.Fatal("local rules not applied")
	}
	// Unchanged: no new epoch.
	r.latcher.Poll(context.Background())
	if r.latcher.Current().Epoch != s1.Epoch {
		t.Fatal("an unchanged poll published a new snapshot")
	}
	// Broken file: deny everything, remote mode kept, new epoch.
	writeRaw(t, path, []byte(`{"rules": [`), 0o600)
	r.latcher.Poll(context.Background())
	s2 := r.latcher.Current()
	if s2.Epoch <= s1.Epoch || decide("/metadata/instance", root) == msp.VerdictAllow || s2.Mode(msp.EndpointIMDS) != msp.ModeEnforce {
		t.Fatalf("broken file did not fail closed: epoch %d", s2.Epoch)
	}
	// A rules file others can write is refused the same way.
	writeRaw(t, path, []byte(localAllowInstance), 0o666)
	r.latcher.Poll(context.Background())
	if decide("/metadata/instance", root) == msp.VerdictAllow {
		t.Fatal("a world-writable rules file was used")
	}
	// Removed: back to the remote rules (allow).
	os.Remove(path)
	r.latcher.Poll(context.Background())
	if decide("/metadata/identity/oauth2/token", other) != msp.VerdictAllow {
		t.Fatal("missing file should leave the remote rules in force")
	}
	// WireServer and HostGA were untouched throughout.
	if got := r.latcher.Current().RuleIDs[msp.EndpointHostGA]; got != "ws-rules" {
		t.Fatalf("hostga rule id %q", got)
	}
}

// TestLatcherSyncsHostClock checks the host date drives the agent's dates.
func TestLatcherSyncsHostClock(t *testing.T) {
	skew := 2 * time.Hour
	r := newRig(t, &msptest.Options{Rules: enforceAll(), Now: func() time.Time { return time.Now().Add(skew) }}, nil)
	r.latcher.Poll(context.Background())
	if d := time.Until(r.latcher.HostNow()); d < skew-time.Minute || d > skew+time.Minute {
		t.Fatalf("host clock offset %v, want about %v", d, skew)
	}
	// The attestation was dated with host time.
	reqs := r.host.Requests()
	last := reqs[len(reqs)-1]
	v, _ := last.Get(msp.HeaderDate)
	d, err := msp.ParseDate(v)
	if err != nil || time.Until(d) < skew-time.Minute {
		t.Fatalf("attestation dated %q (%v)", v, err)
	}
}
