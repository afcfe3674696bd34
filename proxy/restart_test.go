package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

// modeSnapshot is a snapshot with every endpoint in mode, allowing all,
// signed with key when it is set.
func modeSnapshot(t *testing.T, state string, mode msp.Mode, key *msp.Key, restored bool) *keylatch.Snapshot {
	t.Helper()
	items := map[msp.Endpoint]*msp.AuthorizationItem{}
	for _, ep := range msp.Endpoints {
		items[ep] = &msp.AuthorizationItem{Mode: mode, DefaultAccess: msp.AccessAllow, ID: "all-" + mode.String()}
	}
	s := snapshotFor(t, 1, items, key)
	s.State, s.Restored = state, restored
	return s
}

// A request is never sent unsigned to an endpoint the snapshot has in
// Enforce: without a key it gets 503 with Retry-After, whatever the
// snapshot's origin (restored from disk or polled with a key that cannot be
// latched). In Audit or Disabled, or with a key, it goes out as before.
func TestNoUnsignedRequestInEnforce(t *testing.T) {
	key := testKey(t, 24)
	const latched = "WireServer Enforce -  IMDS Enforce - HostGA Enforce"
	type got struct {
		Status     int
		RetryAfter string
		Forwarded  bool
		Signed     bool
	}
	tests := []struct {
		name string
		snap func(*testing.T) *keylatch.Snapshot
		want got
	}{
		{"restored enforce with its key", func(t *testing.T) *keylatch.Snapshot {
			return modeSnapshot(t, latched, msp.ModeEnforce, &key, true)
		}, got{Status: 200, Forwarded: true, Signed: true}},
		{"restored enforce, key file lost", func(t *testing.T) *keylatch.Snapshot {
			return modeSnapshot(t, latched, msp.ModeEnforce, nil, true)
		}, got{Status: 503, RetryAfter: "1"}},
		{"polled enforce, key not latched", func(t *testing.T) *keylatch.Snapshot {
			return modeSnapshot(t, msp.SecureChannelUnknown, msp.ModeEnforce, nil, false)
		}, got{Status: 503, RetryAfter: "1"}},
		{"restored audit without key", func(t *testing.T) *keylatch.Snapshot {
			return modeSnapshot(t, latched, msp.ModeAudit, nil, true)
		}, got{Status: 200, Forwarded: true}},
		{"first boot, nothing known", func(t *testing.T) *keylatch.Snapshot {
			return &keylatch.Snapshot{State: msp.SecureChannelUnknown}
		}, got{Status: 200, Forwarded: true}},
		{"disabled", func(t *testing.T) *keylatch.Snapshot {
			return modeSnapshot(t, msp.SecureChannelDisabled, msp.ModeDisabled, nil, false)
		}, got{Status: 200, Forwarded: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := newFakeHost(t)
			host.addKey(key)
			tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr), tweak: func(c *Config) {
				// First boot waits for the first poll; here none comes.
				c.StartupWait = 50 * time.Millisecond
				c.Latch = waitingLatch{c.Latch, func(ctx context.Context) *keylatch.Snapshot { <-ctx.Done(); return nil }}
			}})
			tp.snap.Store(tt.snap(t))
			resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n")
			g := got{Status: rawStatus(resp)}
			if _, after, ok := strings.Cut(resp, "\r\nRetry-After: "); ok {
				g.RetryAfter, _, _ = strings.Cut(after, "\r\n")
			}
			if reqs := host.requests(); len(reqs) > 0 {
				g.Forwarded = true
				_, g.Signed = reqs[0].Msg.Get(msp.HeaderAuthorization)
				if g.Signed && reqs[0].VerifyErr != nil {
					t.Errorf("signature refused: %v", reqs[0].VerifyErr)
				}
			}
			if diff := cmp.Diff(tt.want, g); diff != "" {
				t.Errorf("(-want +got):\n%s\n%s", diff, resp)
			}
			recs := tp.waitRecords(t, 1)
			if len(recs) != 1 || recs[0].StatusCode != tt.want.Status {
				t.Errorf("audit records %+v", recs)
			}
		})
	}
}

// A skip-sig upload from root is not signed in any mode, so it is
// forwarded in Enforce without a key as with one.
func TestSkipSigWithoutKeyInEnforce(t *testing.T) {
	host := newFakeHost(t)
	tp := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.WireServerAddr)})
	tp.snap.Store(modeSnapshot(t, "WireServer Enforce -  IMDS Enforce - HostGA Enforce", msp.ModeEnforce, nil, true))
	resp := tp.raw(t, "PUT /vmAgentLog HTTP/1.1\r\nHost: 168.63.129.16\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
	if st := rawStatus(resp); st != 200 || len(host.requests()) != 1 {
		t.Fatalf("status %d, host saw %d requests\n%s", st, len(host.requests()), resp)
	}
	resp = tp.raw(t, "GET /machine?comp=goalstate HTTP/1.1\r\nHost: 168.63.129.16\r\nConnection: close\r\n\r\n")
	if st := rawStatus(resp); st != 503 || len(host.requests()) != 1 {
		t.Fatalf("signed request without a key: status %d, host saw %d requests\n%s", st, len(host.requests()), resp)
	}
}
