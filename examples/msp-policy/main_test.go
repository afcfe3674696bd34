package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/policy"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rules builds a local rules file allowing paths (with optional query
// requirement) to one identity.
func rules(def string, identity string, privileges ...string) string {
	var ps, names []string
	for i, p := range privileges {
		path, q, _ := strings.Cut(p, "?")
		qp := ""
		if q != "" {
			k, v, _ := strings.Cut(q, "=")
			qp = fmt.Sprintf(`,"queryParameters":{%q:%q}`, k, v)
		}
		ps = append(ps, fmt.Sprintf(`{"name":"p%d","path":%q%s}`, i, path, qp))
		names = append(names, fmt.Sprintf(`"p%d"`, i))
	}
	return fmt.Sprintf(`{"defaultAccess":%q,"id":"local-id","rules":{"privileges":[%s],"roles":[{"name":"r","privileges":[%s]}],"identities":[{"name":"i",%s}],"roleAssignments":[{"role":"r","identities":["i"]}]}}`,
		def, strings.Join(ps, ","), strings.Join(names, ","), identity)
}

const token = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"

// The local-rules scenarios of the pen-test catalogue (docs/protocol.md §10.1,
// phase 4b): HTTP 200 there is exit 0 here, 403 is exit 3.
func TestSimulateLocalRulesScenarios(t *testing.T) {
	root := `"userName":"root"`
	tests := []struct {
		id, endpoint, rules, mode string
		url, user, exe, groups    string
		want                      int
	}{
		{"S1", "imds", `{"defaultAccess":"allow"}`, "disabled", "/metadata/instance", "root", "/usr/bin/curl", "", exitOK},
		{"S2", "imds", `{"defaultAccess":"deny"}`, "enforce", "/metadata/instance", "root", "/usr/bin/curl", "", exitDenied},
		{"S3", "imds", `{"mode":"audit","defaultAccess":"deny"}`, "enforce", "/metadata/instance", "root", "/usr/bin/curl", "", exitDenied},
		{"S4 instance", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata/instance?api-version=2021-02-01", "root", "", "", exitOK},
		{"S4 token", "imds", rules("deny", root, "/metadata/instance"), "enforce", token, "root", "", "", exitDenied},
		{"S4 versions", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata/versions", "root", "", "", exitDenied},
		{"S5", "imds", rules("deny", `"userName":"someoneelse"`, "/metadata/instance"), "enforce", "/metadata/instance", "root", "", "", exitDenied},
		{"S6 %2F", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata%2Fidentity/oauth2/token", "root", "", "", exitDenied},
		{"S6 %2f", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata%2fidentity/oauth2/token", "root", "", "", exitDenied},
		{"S6 %252F", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata/instance%252F..%252F..%252Fidentity", "root", "", "", exitDenied},
		{"S6 %3F", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata/instance%3Fx=1", "root", "", "", exitDenied},
		{"S6 dots", "imds", rules("deny", root, "/metadata/instance"), "enforce", "/metadata/instance/../identity/oauth2/token", "root", "", "", exitDenied},
		{"S6 slashes", "imds", rules("deny", root, "/metadata/instance"), "enforce", "//metadata///identity", "root", "", "", exitDenied},
		{"WS-S6 Certificates", "wireserver", rules("deny", root, "/machine?comp=goalstate"), "enforce", "/machine/?comp=Certificates", "root", "", "", exitDenied},
		{"WS-S6 GOALSTATE", "wireserver", rules("deny", root, "/machine?comp=goalstate"), "enforce", "/machine/?comp=GOALSTATE", "root", "", "", exitOK},
		{"S7 match", "imds", rules("deny", root, "/metadata/instance?format=json"), "enforce", "/metadata/instance?format=json", "root", "", "", exitOK},
		{"S7 missing", "imds", rules("deny", root, "/metadata/instance?format=json"), "enforce", "/metadata/instance", "root", "", "", exitDenied},
		{"S7 wrong", "imds", rules("deny", root, "/metadata/instance?format=json"), "enforce", "/metadata/instance?format=text", "root", "", "", exitDenied},
		{"S7 extra", "imds", rules("deny", root, "/metadata/instance?format=json"), "enforce", "/metadata/instance?format=json&api-version=1", "root", "", "", exitOK},
		{"S8", "imds", rules("deny", `"groupName":"ops"`, "/metadata/instance"), "enforce", "/metadata/instance", "alice", "", "alice,ops", exitOK},
		{"S9 python", "imds", rules("deny", `"exePath":"/usr/bin/curl"`, "/metadata/instance"), "enforce", "/metadata/instance", "root", "/usr/bin/python3", "", exitDenied},
		{"S9 curl", "imds", rules("deny", `"exePath":"/usr/bin/curl"`, "/metadata/instance"), "enforce", "/metadata/instance", "root", "/usr/bin/curl", "", exitOK},
		{"S11 BOM", "imds", "\xEF\xBB\xBF" + `{"defaultAccess":"deny"}`, "enforce", "/metadata/instance", "root", "", "", exitDenied},
		// Upstream's serde refuses the file (the endpoint fails closed); like
		// S10's malformed file it is an error here.
		{"S12 duplicate keys", "imds", `{"defaultAccess":"allow","defaultAccess":"deny"}`, "enforce", "/metadata/instance", "root", "", "", exitError},
		{"S17 prefixed names", "imds", strings.ReplaceAll(rules("deny", root, "/metadata/instance"), `"p0"`, `"LocalFileRules_p0"`), "enforce", "/metadata/instance", "root", "", "", exitOK},
		{"S18 dangling", "imds", strings.Replace(rules("deny", root, "/metadata/instance"), `"privileges":["p0"]`, `"privileges":["nope"]`, 1), "enforce", "/metadata/instance", "root", "", "", exitDenied},
		{"S19 homoglyph", "imds", rules("deny", `"userName":"rооt"`, "/metadata/instance"), "enforce", "/metadata/instance", "root", "", "", exitDenied},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			f := writeFile(t, "rules.json", tt.rules)
			args := []string{"simulate", "--rules", f, "--endpoint", tt.endpoint, "--mode", tt.mode, "--url", tt.url, "--user", tt.user, "--exe", tt.exe}
			if tt.groups != "" {
				args = append(args, "--groups", tt.groups)
			}
			if tt.user != "root" {
				args = append(args, "--uid", "1000")
			}
			code, out, errOut := runCLI(t, args...)
			if code != tt.want {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.want, out, errOut)
			}
		})
	}
}

// S10: a malformed file is an error; S20: a deny-all document never allows
// any spelling of the token path.
func TestSimulateMalformedAndDenyAll(t *testing.T) {
	if code, _, errOut := runCLI(t, "simulate", "--rules", writeFile(t, "r.json", `{"defaultAccess":`), "--url", "/"); code != exitError || !strings.Contains(errOut, "bad rules") {
		t.Errorf("S10: exit %d: %s", code, errOut)
	}
	deny := writeFile(t, "deny.json", `{"defaultAccess":"deny"}`)
	forms := []string{token, "/metadata/identity/oauth2/token%3Fresource=x", "/metadata%2Fidentity%2Foauth2%2Ftoken",
		"/metadata%2fidentity/oauth2/token", "/metadata%252Fidentity/oauth2/token", "/metadata/identity/oauth2/token.",
		"/metadata/./identity/oauth2/token", "/metadata/%2E/identity/oauth2/token", "/metadata/identity;x=1/oauth2/token",
		"/METADATA/identity/oauth2/token", "//metadata///identity/oauth2//token", "/metadata/ıdentity/oauth2/token"}
	for _, u := range forms {
		code, out, _ := runCLI(t, "simulate", "--rules", deny, "--url", u, "--json")
		var o policy.Outcome
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("%s: %v: %s", u, err, out)
		}
		if code != exitDenied || o.Canonical.Verdict.Forwarded() || o.Legacy.Verdict.Forwarded() {
			t.Errorf("S20 %s: exit %d, %+v", u, code, o)
		}
	}
}

func TestLearnThenSimulateGate(t *testing.T) {
	var log strings.Builder
	for i := range 30 {
		fmt.Fprintf(&log, `{"method":"GET","url":"/metadata/instance/compute/f%d?api-version=2021-02-01","ip":"169.254.169.254","port":80,"userName":"root","processFullPath":"/usr/bin/curl","runAsElevated":true,"responseStatus":"200 OK","decision":"audit"}`+"\n", i%3)
		fmt.Fprintf(&log, `{"method":"GET","url":"/metadata/identity/oauth2/token?resource=https%%3A%%2F%%2Fvault.azure.net","ip":"169.254.169.254","port":80,"userName":"app","processFullPath":"/opt/app/app","runAsElevated":false,"responseStatus":"200 OK","decision":"audit"}`+"\n")
	}
	logFile := writeFile(t, "audit.log", log.String())
	for _, format := range []string{"item", "local", "gallery"} {
		code, learned, errOut := runCLI(t, "learn", "--audit-log", logFile, "--format", format)
		if code != exitOK {
			t.Fatalf("learn %s: %d %s", format, code, errOut)
		}
		rulesFile := writeFile(t, "learned.json", learned)
		code, out, errOut := runCLI(t, "simulate", "--rules", rulesFile, "--audit-log", logFile, "--json")
		if code != exitOK {
			t.Fatalf("simulate learned %s rules: exit %d\n%s%s\n%s", format, code, out, errOut, learned)
		}
		var rep policy.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(policy.Report{Total: 60, Allowed: 60, Changes: rep.Changes}, rep); diff != "" {
			t.Errorf("%s (-want +got):\n%s", format, diff)
		}
	}
	// A stricter candidate gates the rollout with exit 3 and names the change.
	strict := writeFile(t, "strict.json", rules("deny", `"exePath":"/usr/bin/curl"`, "/metadata/instance"))
	code, out, _ := runCLI(t, "simulate", "--rules", strict, "--audit-log", logFile)
	if code != exitDenied || !strings.Contains(out, "/opt/app/app") || !strings.Contains(out, "denied 30 (30 of them let through today)") {
		t.Errorf("gate: exit %d\n%s", code, out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"simulate"}, {"simulate", "--rules", "x"}, {"learn"}, {"learn", "--audit-log", "x", "--group-by", "moon"}} {
		if code, _, _ := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// A learned rule set written as a gallery body is what the arm package
// sends to create a profile version: it decodes into arm.ProfileVersion,
// validates there, and arm's own encoding reads back as the same rules.
func TestGalleryFormatMatchesARM(t *testing.T) {
	var log strings.Builder
	for i := range 5 {
		fmt.Fprintf(&log, `{"method":"GET","url":"/metadata/instance/compute/f%d","ip":"169.254.169.254","port":80,"userName":"root","processFullPath":"/usr/bin/curl","runAsElevated":true,"decision":"audit"}`+"\n", i)
	}
	code, body, errOut := runCLI(t, "learn", "--audit-log", writeFile(t, "a.log", log.String()), "--format", "gallery", "--location", "westeurope")
	if code != exitOK {
		t.Fatalf("learn: %d %s", code, errOut)
	}
	var v arm.ProfileVersion
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if err := v.Validate(); err != nil {
		t.Fatalf("arm refuses the learned body: %v\n%s", err, body)
	}
	if v.Properties.Mode != arm.ModeEnforce || v.Properties.DefaultAccess != arm.AccessDeny || v.Location != "westeurope" {
		t.Errorf("version = %+v", v.Properties)
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	fromARM, f, err := policy.ReadRules(again, msp.ModeEnforce)
	if err != nil || f != policy.FormatGallery {
		t.Fatalf("arm's encoding: %v %v", f, err)
	}
	want, _, _ := policy.ReadRules([]byte(body), msp.ModeEnforce)
	a, _ := policy.WriteRules(want, policy.FormatItem, "")
	b, _ := policy.WriteRules(fromARM, policy.FormatItem, "")
	if diff := cmp.Diff(string(a), string(b)); diff != "" {
		t.Errorf("rules changed through arm (-policy +arm):\n%s", diff)
	}
}

// -h, --help and help print a synopsis on standard output and exit 0, on
// the program and on each command; nothing else is printed.
func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "usage: msp-policy <command> [flags]"},
		{[]string{"--help"}, "usage: msp-policy <command> [flags]"},
		{[]string{"help"}, "usage: msp-policy <command> [flags]"},
		{[]string{"help", "simulate"}, "usage: msp-policy simulate --rules FILE"},
		{[]string{"help", "learn"}, "usage: msp-policy learn --audit-log FILE"},
		{[]string{"simulate", "-h"}, "usage: msp-policy simulate --rules FILE"},
		{[]string{"simulate", "--help"}, "-uid uint"},
		{[]string{"learn", "-h"}, "usage: msp-policy learn --audit-log FILE"},
		{[]string{"learn", "--help"}, "-group-by string"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(t, tt.args...)
		if code != exitOK || !strings.Contains(out, tt.want) || errOut != "" {
			t.Errorf("%q: exit %d, stdout lacks %q or stderr not empty:\n%s\nstderr: %s", tt.args, code, tt.want, out, errOut)
		}
	}
	if code, _, _ := runCLI(t, "help", "moon"); code != exitUsage {
		t.Errorf("help moon: exit %d, want %d", code, exitUsage)
	}
}

// simulate --user resolves the name to the uid the agent would see; an
// unknown name needs --uid, and no name is ever taken for uid 0.
func TestResolveCaller(t *testing.T) {
	accounts := map[string]caller{
		"root":   {name: "root", uid: 0, groups: []string{"root"}},
		"nobody": {name: "nobody", uid: 65534, groups: []string{"nogroup"}},
	}
	lookup := func(name, uid string) (*caller, error) {
		for _, c := range accounts {
			if c.name == name || (name == "" && fmt.Sprint(c.uid) == uid) {
				return &c, nil
			}
		}
		return nil, fmt.Errorf("unknown user %s%s", name, uid)
	}
	tests := []struct {
		name          string
		user          string
		userSet       bool
		uid           uint32
		uidSet        bool
		want          caller
		wantUnresolve bool
	}{
		{"nobody resolves to its own uid, not 0", "nobody", true, 0, false, accounts["nobody"], false},
		{"default user root", "root", false, 0, false, accounts["root"], false},
		{"a user only the VM has needs --uid", "appsvc", true, 0, false, caller{}, true},
		{"--user and --uid taken as given", "appsvc", true, 1001, true, caller{name: "appsvc", uid: 1001}, false},
		{"--uid alone finds the name", "root", false, 65534, true, accounts["nobody"], false},
		{"--uid alone unknown here needs --user", "root", false, 4242, true, caller{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveCaller(tt.user, tt.userSet, tt.uid, tt.uidSet, lookup)
			if errors.Is(err, errUnresolved) != tt.wantUnresolve {
				t.Fatalf("err = %v, want unresolved %v", err, tt.wantUnresolve)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(caller{})); diff != "" {
				t.Errorf("caller (-want +got):\n%s", diff)
			}
		})
	}
}

// Through the command: a user this machine does not know is a usage error
// that names --uid, not a decision for uid 0.
func TestSimulateUnknownUserNeedsUID(t *testing.T) {
	r := writeFile(t, "r.json", rules("deny", `"userName":"root"`, "/metadata/instance"))
	code, out, errOut := runCLI(t, "simulate", "--rules", r, "--url", "/metadata/instance", "--user", "no-such-user-gpa")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "--uid") {
		t.Errorf("exit %d, stdout %q, stderr %q; want a usage error naming --uid", code, out, errOut)
	}
	code, out, _ = runCLI(t, "simulate", "--rules", r, "--url", "/metadata/instance", "--user", "no-such-user-gpa", "--uid", "1000", "--json")
	var o policy.Outcome
	if err := json.Unmarshal([]byte(out), &o); err != nil || code != exitDenied {
		t.Errorf("with --uid: exit %d, %v: %s", code, err, out)
	}
}

// TestManyAuditLogs learns from one VM's log and another's Log Analytics
// export, given as a glob and a file, and simulates over both.
func TestManyAuditLogs(t *testing.T) {
	dir := t.TempDir()
	vm1 := `{"method":"GET","url":"/metadata/instance/compute?api-version=2021-02-01","ip":"169.254.169.254","port":80,"userName":"root","processFullPath":"/usr/bin/curl","runAsElevated":true,"decision":"audit"}`
	vm2 := `{"method":"GET","url":"/metadata/identity/oauth2/token?resource=https%3A%2F%2Fvault.azure.net","ip":"169.254.169.254","port":80,"userName":"app","processFullPath":"/opt/app/app","decision":"audit"}`
	export, err := json.Marshal([]map[string]string{{"Computer": "vm2", "RawData": vm2}})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"vm1.ProxyAgent.Connection.log": vm1 + "\n", "vm2-export.json": string(export)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, learned, errOut := runCLI(t, "learn", "--audit-log", filepath.Join(dir, "*.log"), "--audit-log", filepath.Join(dir, "vm2-export.json"))
	if code != exitOK || !strings.Contains(learned, "/opt/app/app") || !strings.Contains(learned, "/usr/bin/curl") {
		t.Fatalf("learn: %d %s %s", code, learned, errOut)
	}
	rulesFile := writeFile(t, "learned.json", learned)
	code, out, _ := runCLI(t, "simulate", "--rules", rulesFile, "--audit-log", dir)
	if code != exitOK || !strings.Contains(out, "replayed 2 requests") {
		t.Errorf("simulate over the directory: %d %s", code, out)
	}
}
