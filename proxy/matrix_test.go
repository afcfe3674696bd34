package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// rulesFor builds a rule set that grants /allowed to the user named who.
func rulesFor(mode msp.Mode, def msp.DefaultAccess, who string) *msp.AuthorizationItem {
	return &msp.AuthorizationItem{Mode: mode, DefaultAccess: def, ID: "ruleset-" + mode.String() + "-" + def.String(),
		Rules: &msp.AccessControlRules{
			Privileges:      []msp.Privilege{{Name: "p", Path: "/allowed"}},
			Roles:           []msp.Role{{Name: "r", Privileges: []string{"p"}}},
			Identities:      []msp.Identity{{Name: "i", UserName: who}},
			RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"i"}}},
		}}
}

// TestMatrix covers endpoint × mode × default access × root/non-root × rule
// match: the status, whether the host saw the request, whether its signature
// verified, and the audit record.
func TestMatrix(t *testing.T) {
	key := testKey(t, 1)
	host := newFakeHost(t)
	host.addKey(key)
	type outcome struct {
		Status    int
		HostSaw   bool
		Verified  bool
		Marker    string
		Decision  string
		Reason    string
		Rule      string
		Forwarded bool
		Signed    bool
	}
	for _, ep := range msp.Endpoints {
		for _, mode := range []msp.Mode{msp.ModeDisabled, msp.ModeAudit, msp.ModeEnforce} {
			for _, def := range []msp.DefaultAccess{msp.AccessAllow, msp.AccessDeny} {
				for _, root := range []bool{true, false} {
					for _, match := range []bool{true, false} {
						name := fmt.Sprintf("%s/%s/%s/root=%v/match=%v", ep, mode, def, root, match)
						t.Run(name, func(t *testing.T) {
							caller := userCaller(ep.AddrPort())
							if root {
								caller = rootCaller(ep.AddrPort())
							}
							item := rulesFor(mode, def, caller.Claims.UserName)
							tp := newTestProxy(t, host, proxyOpts{caller: caller})
							tp.snap.Store(snapshotFor(t, 7, map[msp.Endpoint]*msp.AuthorizationItem{ep: item}, &key))
							path := "/other/thing?a=1"
							if match {
								path = "/allowed/thing?a=1"
							}
							before := len(host.requests())
							resp, err := tp.client().Get("http://" + hostOf(ep.AddrPort()) + path)
							if err != nil {
								t.Fatal(err)
							}
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()

							// The oracle: docs/protocol.md §4.4 and §4.6.
							want := outcome{Status: 200, HostSaw: true, Verified: true, Marker: msp.ResponseMarker,
								Decision: "allow", Rule: item.ID, Forwarded: true, Signed: true}
							switch {
							case ep.RequiresRoot() && !root:
								want = outcome{Status: 403, Decision: "deny", Reason: "root-required", Rule: item.ID}
							case mode == msp.ModeDisabled:
								want.Reason = "disabled"
							case match:
								want.Reason = "identity-matched"
							case def == msp.AccessAllow:
								want.Reason = "default"
							case mode == msp.ModeAudit:
								want.Decision, want.Reason = "audit", "default"
							default:
								want = outcome{Status: 403, Decision: "deny", Reason: "default", Rule: item.ID}
							}

							got := outcome{Status: resp.StatusCode, Marker: resp.Header.Get(msp.HeaderAuthorization)}
							reqs := host.requests()[before:]
							if len(reqs) > 0 {
								got.HostSaw = true
								got.Verified = reqs[0].VerifyErr == nil
								if reqs[0].Msg.RawURI != path {
									t.Errorf("host saw %q, want %q", reqs[0].Msg.RawURI, path)
								}
							}
							recs := tp.waitRecords(t, 1)
							if len(recs) != 1 {
								t.Fatalf("%d audit records, want 1", len(recs))
							}
							rec := recs[0]
							got.Decision, got.Reason, got.Rule, got.Forwarded, got.Signed = rec.Decision, rec.Reason, rec.Rule, rec.Forwarded, rec.Signed
							if diff := cmp.Diff(want, got); diff != "" {
								t.Errorf("outcome (-want +got):\n%s\nbody: %s", diff, body)
							}
							if want.Status == 403 {
								if !strings.Contains(string(body), item.ID) {
									t.Errorf("403 body %q does not name rule set %q", body, item.ID)
								}
								if !resp.Close {
									t.Errorf("403 did not close the connection")
								}
							}
							wantRec := msp.AuditRecord{Method: "GET", URL: path, IP: ep.AddrPort().Addr().String(), Port: ep.AddrPort().Port(),
								UserID: caller.Claims.UserID, UserName: caller.Claims.UserName, UserGroups: caller.Claims.UserGroups,
								ProcessFullPath: caller.Claims.ProcessFullPath, ProcessCmdLine: caller.Claims.ProcessCmdLine,
								RunAsElevated: root, StatusCode: want.Status, ResponseStatus: fmt.Sprintf("%d %s", want.Status, http.StatusText(want.Status)),
								Endpoint: ep.String(), Epoch: 7}
							rec.Time, rec.ClientIP, rec.ClientPort, rec.ElapsedTime, rec.ElapsedMicros = wantRec.Time, "", 0, 0, 0
							rec.Decision, rec.Reason, rec.Rule, rec.Forwarded, rec.Signed, rec.Mode, rec.ErrorDetails, rec.Privilege, rec.Identity = "", "", "", false, false, "", "", "", ""
							if diff := cmp.Diff(wantRec, rec); diff != "" {
								t.Errorf("audit record (-want +got):\n%s", diff)
							}
						})
					}
				}
			}
		}
	}
}
