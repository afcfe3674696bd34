package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// seen is what a call left behind: the requests the host received for it
// (the key protocol's own polls left out) and the audit records it caused.
type seen struct {
	host  []msptest.Request
	audit int
	at    time.Time
}

// mark remembers where the host's and the audit log's records stand. The
// connection log is written in batches, so records are also told apart by
// time: a record of an earlier call may land after the mark.
func mark(t *testing.T, env *agenttest.Env) seen {
	return seen{host: env.Host.Requests(), audit: len(env.ConnectionLog(t)), at: time.Now()}
}

// forwarded returns the non-secure-channel requests the host got since m,
// leaving out the agent's own telemetry posts (no test sends telemetry
// through the proxy).
func forwarded(env *agenttest.Env, m seen) []msptest.Request {
	var out []msptest.Request
	for _, r := range env.Host.Requests()[len(m.host):] {
		if !r.SecureChannel && !strings.EqualFold(r.RawURI, keylatch.TelemetryPath) {
			out = append(out, r)
		}
	}
	return out
}

// lastDecision waits briefly for the audit record of a request to url made
// after m and returns its decision, "" if none came.
func lastDecision(t *testing.T, env *agenttest.Env, m seen, url string) string {
	t.Helper()
	target := url
	if rest, ok := strings.CutPrefix(url, "http://"); ok {
		target = "/"
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			target = rest[i:]
		}
	}
	r, _ := waitRecord(t, env, m, func(r msp.AuditRecord) bool { return r.URL == target || r.URL == url })
	return r.Decision
}

// waitRecord waits up to 2 s (the agent writes its connection log in
// batches) for an audit record made after m that match accepts, and returns
// the newest.
func waitRecord(t *testing.T, env *agenttest.Env, m seen, match func(msp.AuditRecord) bool) (msp.AuditRecord, bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		recs := env.ConnectionLog(t)
		for i := len(recs) - 1; i >= 0; i-- {
			if r := recs[i]; !r.Time.Before(m.at) && match(r) {
				return r, true
			}
		}
		if time.Now().After(deadline) {
			return msp.AuditRecord{}, false
		}
	}
}

// checkSigned fails t for any request the host got that did not carry a
// signature it verified.
func checkSigned(t *testing.T, what string, reqs []msptest.Request) {
	t.Helper()
	for _, r := range reqs {
		if !r.SignatureValid {
			t.Errorf("%s: the host got %s %s with signed=%v valid=%v (%s)", what, r.Method, r.RawURI, r.Signed, r.SignatureValid, r.SignatureError)
		}
	}
}
