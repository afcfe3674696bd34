package msp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		dst  string
		want Endpoint
	}{
		{"168.63.129.16:80", EndpointWireServer},
		{"168.63.129.16:32526", EndpointHostGA},
		{"169.254.169.254:80", EndpointIMDS},
		{"[::ffff:169.254.169.254]:80", EndpointIMDS},
		{"169.254.169.254:443", EndpointNone},
		{"127.0.0.1:3080", EndpointNone},
		{"168.63.129.17:80", EndpointNone},
	}
	for _, tt := range tests {
		if got := Classify(netip.MustParseAddrPort(tt.dst)); got != tt.want {
			t.Errorf("Classify(%s) = %v, want %v", tt.dst, got, tt.want)
		}
	}
	for _, ep := range Endpoints {
		if got := Classify(ep.AddrPort()); got != ep {
			t.Errorf("Classify(%v.AddrPort()) = %v", ep, got)
		}
	}
}

func TestParseEnums(t *testing.T) {
	modes := map[string]Mode{"Enforce": ModeEnforce, " audit ": ModeAudit, "DISABLED": ModeDisabled}
	for in, want := range modes {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "enforced", "on"} {
		if _, err := ParseMode(bad); !errors.Is(err, ErrInvalidMode) {
			t.Errorf("ParseMode(%q) err = %v", bad, err)
		}
		if _, err := ParseDefaultAccess(bad); !errors.Is(err, ErrInvalidDefaultAccess) {
			t.Errorf("ParseDefaultAccess(%q) err = %v", bad, err)
		}
		if _, err := ParseEndpoint(bad); !errors.Is(err, ErrUnknownEndpoint) {
			t.Errorf("ParseEndpoint(%q) err = %v", bad, err)
		}
	}
	if a, err := ParseDefaultAccess("Allow"); err != nil || a != AccessAllow {
		t.Errorf("ParseDefaultAccess(Allow) = %v, %v", a, err)
	}
	if e, err := ParseEndpoint("HostGAPlugin"); err != nil || e != EndpointHostGA {
		t.Errorf("ParseEndpoint(HostGAPlugin) = %v, %v", e, err)
	}
}

func TestAuthorizationItemJSONRoundTrip(t *testing.T) {
	in := `{"defaultAccess":"Deny","mode":"Enforce","id":"sig-1","rules":{
		"privileges":[{"name":"tok","path":"/metadata/identity/oauth2/token","queryParameters":{"resource":"https://management.azure.com/"}}],
		"roles":[{"name":"r","privileges":["tok"]}],
		"identities":[{"name":"curl","exePath":"/usr/bin/curl"},{"name":"ops","groupName":"ops"}],
		"roleAssignments":[{"role":"r","identities":["curl","ops"]}]}}`
	item, err := ParseAuthorizationItem([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := item.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(item)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseAuthorizationItem(out)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(item, back, cmp.AllowUnexported(AccessControlRules{})); diff != "" {
		t.Errorf("round trip (-first +second):\n%s", diff)
	}
	if !strings.Contains(string(out), `"mode":"enforce"`) || !strings.Contains(string(out), `"defaultAccess":"deny"`) {
		t.Errorf("wire form = %s", out)
	}
}

func TestParseAuthorizationItemErrors(t *testing.T) {
	bad := []string{
		``, `{`, `[]`, `{"mode":"sometimes","defaultAccess":"deny","id":"x"}`,
		`{"mode":"enforce","defaultAccess":"maybe","id":"x"}`, `{"mode":"enforce"} {}`,
		`{"mode":"enforce","rules":{"privileges":"nope"}}`,
		`{"mode":"enforce","defaultAccess":"deny","id":"x"}]`, `{"mode":"enforce","defaultAccess":"deny","id":"x"}}`,
	}
	for _, in := range bad {
		if _, err := ParseAuthorizationItem([]byte(in)); !errors.Is(err, ErrInvalidRules) {
			t.Errorf("ParseAuthorizationItem(%q) err = %v, want ErrInvalidRules", in, err)
		}
	}
	// A UTF-8 BOM and duplicate keys (last wins) are tolerated, as upstream.
	item, err := ParseAuthorizationItem([]byte("\xEF\xBB\xBF" + `{"mode":"audit","mode":"enforce","defaultAccess":"deny","id":"x"}`))
	if err != nil || item.Mode != ModeEnforce {
		t.Errorf("BOM/duplicate: %+v, %v", item, err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	r := &AccessControlRules{
		Privileges: []Privilege{{Name: "p", Path: "/a"}, {Name: "p", Path: ""}, {Name: " ", Path: "/b", QueryParameters: map[string]string{"k": ""}}},
		Roles:      []Role{{Name: "r", Privileges: []string{"p", "p", "missing"}}, {Name: "empty"}},
		Identities: []Identity{{Name: "i", UserName: "root"}, {Name: "none"}},
		RoleAssignments: []RoleAssignment{
			{Role: "r", Identities: []string{"i", "ghost"}},
			{Role: "nope"},
		},
	}
	err := r.Validate()
	if !errors.Is(err, ErrInvalidRules) {
		t.Fatalf("err = %v", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatal("not a *ValidationError")
	}
	type pk struct {
		Kind  ProblemKind
		Where string
	}
	var got []pk
	for _, p := range ve.Problems {
		got = append(got, pk{p.Kind, p.Where})
	}
	want := []pk{
		{ProblemDuplicateName, "privileges[1].name"},
		{ProblemBlankPath, "privileges[1].path"},
		{ProblemBlankName, "privileges[2].name"},
		{ProblemBlankQuery, "privileges[2].queryParameters"},
		{ProblemDuplicateRef, "roles[0].privileges[1]"},
		{ProblemDanglingRef, "roles[0].privileges[2]"},
		{ProblemEmptyRole, "roles[1].privileges"},
		{ProblemEmptySelector, "identities[1]"},
		{ProblemDanglingRef, "roleAssignments[0].identities[1]"},
		{ProblemDanglingRef, "roleAssignments[1].role"},
		{ProblemNoIdentities, "roleAssignments[1].identities"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestKeyNeverPrintsSecret(t *testing.T) {
	inc := uint32(3)
	k := vectorKey(t)
	k.Incarnation = &inc
	secretLower := strings.ToLower(vectorKeyHex)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("latched", "key", k)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("latched", "key", k)
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k, k, k), k.String(), logs.String(),
		fmt.Sprintf("%+v", struct{ K Key }{k}),
	}
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), secretLower[:16]) || strings.Contains(o, "4A404E63") {
			t.Errorf("output leaks the secret: %s", o)
		}
		if !strings.Contains(o, k.GUID) {
			t.Errorf("output lacks the guid: %s", o)
		}
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	inc := uint32(7)
	k := vectorKey(t)
	k.Incarnation, k.Issued = &inc, "2021-05-05T 12:00:00Z"
	b, err := MarshalKeyFile(k)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"authorizationScheme\": \"Azure-HMAC-SHA256\",\n  \"incarnationId\": 7,\n  \"guid\": \"a8016240-7286-49ef-8981-63520cb8f6d0\",\n  \"issued\": \"2021-05-05T 12:00:00Z\",\n  \"key\": \"" + vectorKeyHex + "\"\n}"
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
	back, err := ParseKeyJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(k) || *back.Incarnation != 7 || back.Issued != k.Issued {
		t.Errorf("round trip lost data: %v", back)
	}
}

func TestParseKeyJSONErrors(t *testing.T) {
	tests := []string{
		``, `{"guid":"g"`, `{"authorizationScheme":"Azure-HMAC-SHA256","guid":"g","issued":""}`,
		`{"authorizationScheme":"Azure-HMAC-SHA256","guid":"g","issued":"","key":"ZZ` + vectorKeyHex[2:] + `"}`,
		`{"authorizationScheme":"Azure-HMAC-SHA256","guid":"g","issued":"","key":"abcd"}`,
		`{"authorizationScheme":"Azure-HMAC-SHA256","guid":"","issued":"","key":"` + vectorKeyHex + `"}`,
		`{"authorizationScheme":1,"guid":"g","issued":"","key":"` + vectorKeyHex + `"}`,
	}
	for _, in := range tests {
		_, err := ParseKeyJSON([]byte(in))
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseKeyJSON(%q) err = %v", in, err)
			continue
		}
		if strings.Contains(err.Error(), vectorKeyHex[4:20]) {
			t.Errorf("error leaks key: %v", err)
		}
	}
}

func TestSignRejectsBadInput(t *testing.T) {
	s, err := NewSigner(vectorKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		msg  Message
		want error
	}{
		{Message{Method: "GET", RawURI: "/caf\xc3\xa9"}, ErrInvalidURI},
		{Message{Method: "GET", RawURI: "/a b"}, ErrInvalidURI},
		{Message{Method: "GET", RawURI: "/a\x00"}, ErrInvalidURI},
		{Message{Method: "GET", RawURI: "/", Header: hdrs("x", "a\nb")}, ErrInvalidHeader},
		{Message{Method: "GET", RawURI: "/", Header: hdrs("x", "caf\xc3\xa9")}, ErrInvalidHeader},
		{Message{Method: "GET", RawURI: "/", Header: hdrs("bad name", "v")}, ErrInvalidHeader},
	}
	for _, tt := range tests {
		if _, err := s.Sign(&tt.msg); !errors.Is(err, tt.want) {
			t.Errorf("Sign(%q %q) err = %v, want %v", tt.msg.RawURI, tt.msg.Header, err, tt.want)
		}
	}
	if _, err := NewSigner(Key{}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("NewSigner(zero) err = %v", err)
	}
}

func TestVerify(t *testing.T) {
	k := vectorKey(t)
	other, _ := NewKey("other", strings.Repeat("ab", 32))
	s, _ := NewSigner(k)
	msg := signVectors[1].msg
	msg.Header = append([]HeaderField(nil), msg.Header...)
	authz, err := s.Sign(&msg)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(g string) (Key, bool) {
		if g == k.GUID {
			return k, true
		}
		return Key{}, false
	}
	msg.Set(HeaderAuthorization, authz)
	if _, err := Verify(&msg, lookup); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Every case goes through Verify and through one Verifier, whose
	// cached signer must not make a tampered message pass.
	ver := NewVerifier(lookup)
	tamper := func(f func(m *Message)) error {
		m := msg
		m.Header = append([]HeaderField(nil), msg.Header...)
		f(&m)
		_, err := Verify(&m, lookup)
		if _, verr := ver.Verify(&m); fmt.Sprint(verr) != fmt.Sprint(err) {
			t.Errorf("Verifier.Verify err = %v, Verify err = %v", verr, err)
		}
		return err
	}
	tests := []struct {
		name string
		f    func(m *Message)
		want error
	}{
		{"header value", func(m *Message) { m.Set("metadata", "false") }, ErrSignatureMismatch},
		{"added header", func(m *Message) { m.Set("accept-encoding", "gzip") }, ErrSignatureMismatch},
		{"path", func(m *Message) { m.RawURI = "/metadata/instance?api-version=2021-02-02" }, ErrSignatureMismatch},
		{"body", func(m *Message) { m.Body = []byte("x") }, ErrSignatureMismatch},
		{"claims", func(m *Message) { m.Set(HeaderClaims, ClaimsHeaderRoot) }, ErrSignatureMismatch},
		{"missing", func(m *Message) { m.Del(HeaderAuthorization) }, ErrBadAuthorization},
		{"scheme", func(m *Message) { m.Set(HeaderAuthorization, "Bearer x") }, ErrBadAuthorization},
		{"short sig", func(m *Message) { m.Set(HeaderAuthorization, AuthScheme+" "+k.GUID+" abcd") }, ErrBadAuthorization},
		{"non-hex sig", func(m *Message) { m.Set(HeaderAuthorization, AuthScheme+" "+k.GUID+" "+strings.Repeat("zz", 32)) }, ErrBadAuthorization},
		{"unknown key", func(m *Message) { m.Set(HeaderAuthorization, AuthScheme+" other "+strings.Repeat("00", 32)) }, ErrUnknownKey},
		{"header case and order", func(m *Message) {
			m.Header[0], m.Header[1] = HeaderField{"User-Agent", m.Header[1].Value}, HeaderField{"HOST", m.Header[0].Value}
		}, nil},
	}
	for _, tt := range tests {
		if err := tamper(tt.f); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	_ = other
}

// TestVerifierKeyChanges: the Verifier asks its lookup every time, so a
// key replaced under the same GUID or withdrawn stops verifying at once,
// and more keys than it caches each verify with their own secret.
func TestVerifierKeyChanges(t *testing.T) {
	k := vectorKey(t)
	replaced, err := NewKey(k.GUID, strings.Repeat("cd", 32))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]Key{k.GUID: k}
	for i := range 2 * verifierKeys {
		g := fmt.Sprintf("key-%d", i)
		if keys[g], err = NewKey(g, fmt.Sprintf("%064x", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	v := NewVerifier(func(g string) (Key, bool) { k, ok := keys[g]; return k, ok })
	signed := func(key Key) *Message {
		s, err := NewSigner(key)
		if err != nil {
			t.Fatal(err)
		}
		m := signVectors[1].msg
		m.Header = append([]HeaderField(nil), m.Header...)
		authz, err := s.Sign(&m)
		if err != nil {
			t.Fatal(err)
		}
		m.Set(HeaderAuthorization, authz)
		return &m
	}
	old, fresh := signed(k), signed(replaced)
	steps := []struct {
		name  string
		setup func()
		msg   *Message
		want  error
	}{
		{"original key", func() {}, old, nil},
		{"signed with another secret", func() {}, fresh, ErrSignatureMismatch},
		{"after the key is replaced, the old signature", func() { keys[k.GUID] = replaced }, old, ErrSignatureMismatch},
		{"after the key is replaced, the new signature", func() {}, fresh, nil},
		{"after more keys than the cache holds", func() {
			for i := range 2 * verifierKeys {
				g := fmt.Sprintf("key-%d", i)
				m := signed(keys[g])
				if _, err := v.Verify(m); err != nil {
					t.Fatalf("%s: %v", g, err)
				}
				// Another key's signature under this GUID must not pass.
				freshAuthz, _ := fresh.Get(HeaderAuthorization)
				m.Set(HeaderAuthorization, strings.Replace(freshAuthz, k.GUID, g, 1))
				if _, err := v.Verify(m); !errors.Is(err, ErrSignatureMismatch) {
					t.Fatalf("%s with another key's signature: err = %v", g, err)
				}
			}
		}, fresh, nil},
		{"after the key is withdrawn", func() { delete(keys, k.GUID) }, fresh, ErrUnknownKey},
	}
	for _, st := range steps {
		st.setup()
		if _, err := v.Verify(st.msg); !errors.Is(err, st.want) {
			t.Errorf("%s: err = %v, want %v", st.name, err, st.want)
		}
	}
	// The withdrawn key's signer, and with it its secret, is gone.
	v.mu.Lock()
	_, kept := v.signers[k.GUID]
	v.mu.Unlock()
	if kept {
		t.Errorf("the Verifier still holds the withdrawn key %s", k.GUID)
	}
}

func TestMessageHeaderEditing(t *testing.T) {
	m := &Message{Header: hdrs("Host", "h", "X-A", "1", "x-a", "2", "Accept", "*/*")}
	m.Set("x-a", "3")
	m.Del("accept")
	m.Set("New", "n")
	want := hdrs("Host", "h", "x-a", "3", "New", "n")
	if diff := cmp.Diff(want, m.Header, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDate(t *testing.T) {
	d, err := ParseDate("Wed, 23 Apr 2025 12:00:00 GMT")
	if err != nil {
		t.Fatal(err)
	}
	if got := FormatDate(d); got != "Wed, 23 Apr 2025 12:00:00 GMT" {
		t.Errorf("FormatDate = %q", got)
	}
	if _, err := ParseDate("2025-04-23T12:00:00Z"); err == nil {
		t.Error("ParseDate accepted ISO 8601")
	}
}

// TestSecureChannelState: the string is upstream's, double space included.
func TestSecureChannelState(t *testing.T) {
	for _, tc := range []struct {
		ws, imds, host Mode
		want           string
	}{
		{ModeEnforce, ModeAudit, ModeEnforce, "WireServer Enforce -  IMDS Audit - HostGA Enforce"},
		{ModeDisabled, ModeEnforce, ModeAudit, "WireServer Disabled -  IMDS Enforce - HostGA Audit"},
	} {
		if got := SecureChannelState(tc.ws, tc.imds, tc.host); got != tc.want {
			t.Errorf("SecureChannelState(%v, %v, %v) = %q, want %q", tc.ws, tc.imds, tc.host, got, tc.want)
		}
	}
}
