package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

const imdsIP = "169.254.169.254"

func rec(exe, user, url string) msp.AuditRecord {
	return msp.AuditRecord{Method: "GET", URL: url, IP: imdsIP, Port: 80, UserName: user, ProcessFullPath: exe,
		UserGroups: []string{user}, RunAsElevated: user == "root", Decision: "allow", StatusCode: 200}
}

// genLog makes n records from callers × paths with a fixed seed.
func genLog(seed uint64, n, callers, paths int) []msp.AuditRecord {
	r := rand.New(rand.NewPCG(seed, 1))
	var cs [][2]string
	for i := range callers {
		cs = append(cs, [2]string{fmt.Sprintf("/opt/app%02d/bin/svc", i), fmt.Sprintf("user%02d", i%7)})
	}
	var ps []string
	for i := range paths {
		switch i % 5 {
		case 0:
			ps = append(ps, fmt.Sprintf("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%%3A%%2F%%2Fsvc%02d.example%%2F", i))
		case 1:
			ps = append(ps, fmt.Sprintf("/metadata/instance/compute/field%02d?api-version=2021-02-01&format=text", i))
		case 2:
			ps = append(ps, fmt.Sprintf("/metadata/instance/network/interface/%d/ipv4?api-version=2021-02-01", i))
		case 3:
			ps = append(ps, fmt.Sprintf("/Metadata/scheduledevents/e%02d?api-version=2020-07-01", i))
		default:
			ps = append(ps, fmt.Sprintf("/metadata/attested/document%02d;x=1?api-version=2020-09-01&nonce=%d", i, i))
		}
	}
	// Each caller uses a stable subset of the paths.
	use := make([][]int, callers)
	for i := range use {
		for j := range paths {
			if r.IntN(4) == 0 {
				use[i] = append(use[i], j)
			}
		}
		if len(use[i]) == 0 {
			use[i] = []int{i % paths}
		}
	}
	var out []msp.AuditRecord
	for range n {
		ci := r.IntN(callers)
		p := ps[use[ci][r.IntN(len(use[ci]))]]
		out = append(out, rec(cs[ci][0], cs[ci][1], p))
	}
	return out
}

func learnAndReplay(t *testing.T, log []msp.AuditRecord, g GroupBy) (*LearnResult, *Report) {
	t.Helper()
	res, err := Learn(log, &LearnOptions{GroupBy: g})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := NewSimulator(map[msp.Endpoint]*msp.AuthorizationItem{msp.EndpointIMDS: res.Item})
	if err != nil {
		t.Fatal(err)
	}
	return res, sim.Replay(log)
}

func TestLearnTenThousand(t *testing.T) {
	log := genLog(42, 10000, 20, 50)
	res, rep := learnAndReplay(t, log, GroupByExe)
	if n := len(res.Item.Rules.Identities); n > 20 {
		t.Errorf("%d identities for 20 callers", n)
	}
	if len(res.Skipped) != 0 {
		t.Errorf("skipped %d records: %+v", len(res.Skipped), res.Skipped[0])
	}
	if rep.Denied != 0 || rep.Total != 10000 {
		t.Errorf("replay: %+v", rep)
	}
	if err := res.Item.Validate(); err != nil {
		t.Error(err)
	}
	sim, _ := NewSimulator(map[msp.Endpoint]*msp.AuthorizationItem{msp.EndpointIMDS: res.Item})
	known := log[0]
	outside := []msp.AuditRecord{
		rec("/usr/bin/evil", known.UserName, known.URL),                  // other exe, known path
		rec(known.ProcessFullPath, known.UserName, "/metadata/versions"), // known exe, other path
		rec(known.ProcessFullPath, known.UserName, "/metadata/identity/oauth2/token?resource=https%3A%2F%2Fvault.azure.net%2F"),
	}
	for _, o := range outside {
		if d := sim.Decide(msp.EndpointIMDS, o.Request()).Canonical; d.Verdict != msp.VerdictDeny {
			t.Errorf("%s %s: %v (%v), want deny", o.ProcessFullPath, o.URL, d.Verdict, d.Reason)
		}
	}
	t.Logf("learned %d identities, %d privileges, %d roles from 10000 records",
		len(res.Item.Rules.Identities), len(res.Item.Rules.Privileges), len(res.Item.Rules.Roles))
}

// The property: whatever log, replaying it through the rules learned from
// it denies nothing.
func TestLearnReplayProperty(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		log := genLog(seed, 50+r.IntN(400), 1+r.IntN(12), 1+r.IntN(30))
		for _, g := range []GroupBy{GroupByExe, GroupByUser, GroupByBoth} {
			_, rep := learnAndReplay(t, log, g)
			if rep.Denied != 0 {
				t.Fatalf("seed %d group %d: %d of %d denied: %+v", seed, g, rep.Denied, rep.Total, rep.Changes)
			}
		}
	}
}

func TestLearnCollapsesSegmentWise(t *testing.T) {
	log := []msp.AuditRecord{
		rec("/usr/bin/a", "root", "/metadata/instance/compute/vmId?api-version=1"),
		rec("/usr/bin/a", "root", "/metadata/instance/compute/location?api-version=1"),
		rec("/usr/bin/a", "root", "/metadata/identity/oauth2/token?resource=https://management.azure.com/"),
		rec("/usr/bin/b", "alice", "/metadata/instance/compute-x"),
		rec("/usr/bin/b", "alice", "/metadata/versions"),
		{Method: "GET", URL: "/x%3Fy", IP: imdsIP, Port: 80, ProcessFullPath: "/usr/bin/c", UserName: "c"},
		{Method: "GET", URL: "/machine?comp=goalstate", IP: "168.63.129.16", Port: 80, ProcessFullPath: "/usr/bin/a"},
		{Method: "GET", URL: "/metadata/%2e%2e/identity/oauth2/token", IP: imdsIP, Port: 80, ProcessFullPath: "/usr/bin/a", UserName: "root", StatusCode: 403},
		{Method: "GET", URL: "/metadata/versions/x", IP: imdsIP, Port: 80, ProcessFullPath: "/usr/bin/b", UserName: "alice", Decision: "deny"},
	}
	res, err := Learn(log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range res.Item.Rules.Privileges {
		got = append(got, fmt.Sprintf("%s %v", p.Path, p.QueryParameters))
	}
	want := []string{
		"/metadata/instance/compute map[]",
		"/metadata/identity/oauth2/token map[resource:https://management.azure.com/]",
		"/metadata/instance/compute-x map[]",
		"/metadata/versions map[]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("privileges (-want +got):\n%s", diff)
	}
	var reasons []string
	for _, s := range res.Skipped {
		reasons = append(reasons, s.Reason)
	}
	if diff := cmp.Diff([]string{"CANON_EMBQ", "denied by the agent", "denied by the agent"}, reasons); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	wantIDs := []msp.Identity{{Name: "a", ExePath: "/usr/bin/a"}, {Name: "b", ExePath: "/usr/bin/b"}}
	if diff := cmp.Diff(wantIDs, res.Item.Rules.Identities); diff != "" {
		t.Errorf("identities (-want +got):\n%s", diff)
	}
	if res.Item.DefaultAccess != msp.AccessDeny || res.Item.Mode != msp.ModeEnforce {
		t.Errorf("item = %+v", res.Item)
	}
}

func TestLearnWireServerSkipsNonRoot(t *testing.T) {
	log := []msp.AuditRecord{
		{Method: "GET", URL: "/machine?comp=goalstate", IP: "168.63.129.16", Port: 80, ProcessFullPath: "/usr/sbin/waagent", UserName: "root", RunAsElevated: true},
		{Method: "GET", URL: "/machine?comp=goalstate", IP: "168.63.129.16", Port: 80, ProcessFullPath: "/usr/bin/curl", UserName: "bob"},
	}
	res, err := Learn(log, &LearnOptions{Endpoint: msp.EndpointWireServer})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, "non-root") {
		t.Errorf("skipped = %+v", res.Skipped)
	}
	if p := res.Item.Rules.Privileges; len(p) != 1 || p[0].QueryParameters["comp"] != "goalstate" {
		t.Errorf("privileges = %+v", p)
	}
	if _, err := Learn(nil, nil); !errors.Is(err, ErrNothingToLearn) {
		t.Errorf("empty log: %v", err)
	}
}

func TestReadAuditLog(t *testing.T) {
	in := `{"method":"GET","url":"/metadata/instance","ip":"169.254.169.254","port":80,"userName":"root","processFullPath":"/usr/bin/curl","runAsElevated":true,"responseStatus":200,"decision":"allow"}

{"time":"t","message":{"method":"GET","url":"http://169.254.169.254/metadata/versions","ip":"169.254.169.254","port":80,"userName":"bob","processFullPath":"/usr/bin/python3","responseStatus":"403 Forbidden"}}
`
	recs, err := ReadAuditLog(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1].Verdict() != msp.VerdictDeny || recs[1].Request().RawURI != "/metadata/versions" {
		t.Errorf("records = %+v", recs)
	}
	for _, bad := range []string{"{", `{"url":"/x"}`, "[1]", `{"method":"GET","url":"/","responseStatus":"OK"}`} {
		if _, err := ReadAuditLog(strings.NewReader("\n" + bad + "\n")); !errors.Is(err, ErrBadAuditLog) || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("ReadAuditLog(%q) err = %v", bad, err)
		}
	}
}

func TestReplayReportsChanges(t *testing.T) {
	log := []msp.AuditRecord{
		rec("/usr/bin/curl", "root", "/metadata/instance?api-version=1"),
		rec("/usr/bin/curl", "root", "/metadata/instance?api-version=2"),
		rec("/usr/bin/python3", "bob", "/metadata/instance/compute"),
		rec("/usr/bin/python3", "bob", "/metadata/identity/oauth2/token?resource=x"),
		{Method: "GET", URL: "/", IP: "10.0.0.1", Port: 80},
	}
	log[3].Decision = "deny"
	log = append(log, msp.AuditRecord{Method: "GET", URL: "/machine", IP: "168.63.129.16", Port: 80, Decision: "deny"})
	item := &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "cand", Rules: &msp.AccessControlRules{
		Privileges:      []msp.Privilege{{Name: "inst", Path: "/metadata/instance"}, {Name: "tok", Path: "/metadata/identity"}},
		Roles:           []msp.Role{{Name: "r", Privileges: []string{"inst", "tok"}}},
		Identities:      []msp.Identity{{Name: "curl", ExePath: "/usr/bin/curl"}},
		RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"curl"}}},
	}}
	sim, err := NewSimulator(map[msp.Endpoint]*msp.AuthorizationItem{msp.EndpointIMDS: item})
	if err != nil {
		t.Fatal(err)
	}
	rep := sim.Replay(log)
	want := &Report{Total: 4, Allowed: 2, Denied: 2, NewlyDenied: 1, NotProtected: 1, OtherEndpoints: 1, Changes: []Change{
		{Exe: "/usr/bin/python3", User: "bob", PathPrefix: "/metadata/instance", Was: msp.VerdictAllow, Now: msp.VerdictDeny, Count: 1, Example: "/metadata/instance/compute"},
	}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if !rep.WouldDeny() {
		t.Error("WouldDeny = false")
	}
}
