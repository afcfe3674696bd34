package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// TestAgainstMSPTest runs the proxy against the simulated host with a real
// key latch: the host enforces signatures, so a 200 proves the host accepted
// what the proxy signed; after the host resets the key and the latch picks
// up the new one, requests are signed with the new key.
func TestAgainstMSPTest(t *testing.T) {
	rules := denyTokenRules()
	host := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointWireServer: rules[msp.EndpointWireServer],
		msp.EndpointIMDS:       rules[msp.EndpointIMDS],
	}})
	defer host.Close()
	store, err := keylatch.OpenStore(&keylatch.StoreOptions{Dir: filepath.Join(t.TempDir(), "keys"), Owner: uint32(os.Geteuid())})
	if err != nil {
		t.Fatal(err)
	}
	latcher, err := keylatch.NewLatcher(&keylatch.LatcherOptions{
		Client: keylatch.NewClient(&keylatch.ClientOptions{Addr: host.WireServerAddr()}),
		Store:  store,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	latch := func(notGUID string) *keylatch.Snapshot {
		t.Helper()
		for range 20 {
			latcher.Poll(ctx)
			if s := latcher.Current(); s.Latched() && s.Signer != nil && s.Key.GUID != notGUID {
				return s
			}
		}
		t.Fatalf("not latched: %+v", latcher.Status())
		return nil
	}
	first := latch("")

	// Requests are sent one at a time, so the resolver hands the next
	// connection the caller the test queued for it.
	next := make(chan *Caller, 1)
	audit := &memLog{}
	res := &StaticResolver{ByClientPort: func(uint16) *Caller { return <-next }}
	srv, err := New(Config{
		Resolver: res,
		// The latch is not Run here, so a refresh polls it directly.
		Latch: pollingLatch{latcher},
		Now:   latcher.HostNow,
		Dial: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			ep := msp.Classify(dst)
			if ep == msp.EndpointNone {
				return nil, fmt.Errorf("no simulated endpoint for %s", dst)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", host.Addr(ep).String())
		},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuditLog: audit,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln)
	defer srv.Close()

	// do sends one request as caller on a fresh connection.
	do := func(caller *Caller, method, uri string) (int, string) {
		t.Helper()
		next <- caller
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nMetadata: true\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
			method, uri, hostOf(caller.OriginalDst))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return rawStatus(string(b)), string(b)
	}
	for _, tc := range []struct {
		name     string
		caller   *Caller
		uri      string
		want     int
		hostSees bool
	}{
		{"imds-allowed", userCaller(msp.IMDSAddr), "/metadata/instance?api-version=2021-02-01", 200, true},
		{"imds-denied", userCaller(msp.IMDSAddr), "/metadata/identity/oauth2/token?resource=x", 403, false},
		{"ws-goalstate-root", rootCaller(msp.WireServerAddr), "/machine?comp=goalstate", 200, true},
		{"ws-goalstate-user", userCaller(msp.WireServerAddr), "/machine?comp=goalstate", 403, false},
		{"ws-other-root", rootCaller(msp.WireServerAddr), "/machine?comp=certificates", 403, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host.ResetRequests()
			st, resp := do(tc.caller, "GET", tc.uri)
			if st != tc.want {
				t.Fatalf("status %d, want %d\n%s", st, tc.want, resp)
			}
			reqs := host.Requests()
			if (len(reqs) > 0) != tc.hostSees {
				t.Fatalf("host saw %d requests", len(reqs))
			}
			if tc.hostSees && (!reqs[0].SignatureValid || reqs[0].KeyGUID != first.Key.GUID) {
				t.Errorf("host: valid %v (%s), key %q want %q", reqs[0].SignatureValid, reqs[0].SignatureError, reqs[0].KeyGUID, first.Key.GUID)
			}
		})
	}

	// Key reset at the host: the first request after it is refused by the
	// host (401) under the old key; the proxy gets the new key through
	// Refresh and sends it again, so the client sees no failure.
	// The host's IMDS rules change with the reset, under a new privilege
	// name: the retry is decided, and audited, under the new snapshot.
	renamed := denyTokenRules()[msp.EndpointIMDS]
	renamed.Rules.Privileges[0].Name = "inst-v2"
	renamed.Rules.Roles[0].Privileges = []string{"inst-v2"}
	host.SetRules(msp.EndpointIMDS, renamed)
	host.ResetKey()
	host.ResetRequests()
	before := len(audit.records(t))
	if st, resp := do(userCaller(msp.IMDSAddr), "GET", "/metadata/instance"); st != 200 {
		t.Fatalf("after the reset: %d\n%s", st, resp)
	}
	second := latcher.Current()
	if recs := audit.records(t)[before:]; len(recs) != 1 || !recs[0].Retried || recs[0].Epoch != second.Epoch || recs[0].Privilege != "inst-v2" {
		t.Errorf("audit record of the retried request: %+v; want one, retried, epoch %d, privilege inst-v2", recs, second.Epoch)
	}
	if second.Epoch <= first.Epoch || second.Key.GUID == first.Key.GUID {
		t.Fatalf("epoch %d key %s after %d %s", second.Epoch, second.Key.GUID, first.Epoch, first.Key.GUID)
	}
	var mine []msptest.Request
	for _, r := range host.Requests() {
		if r.Path() == "/metadata/instance" {
			mine = append(mine, r)
		}
	}
	if len(mine) != 2 || mine[0].SignatureValid || mine[0].Status != 401 || !mine[1].SignatureValid || mine[1].KeyGUID != second.Key.GUID {
		for _, r := range mine {
			t.Logf("host: %d valid=%v key=%s", r.Status, r.SignatureValid, r.KeyGUID)
		}
		t.Fatalf("want one refused request under the old key, then one accepted under the new")
	}
	// Later requests go out with the new key at once.
	host.ResetRequests()
	if st, resp := do(userCaller(msp.IMDSAddr), "GET", "/metadata/instance"); st != 200 {
		t.Fatalf("after rotation: %d\n%s", st, resp)
	}
	if r := host.Requests()[0]; !r.SignatureValid || r.KeyGUID != second.Key.GUID {
		t.Errorf("after rotation: valid %v, key %q want %q", r.SignatureValid, r.KeyGUID, second.Key.GUID)
	}
}

// pollingLatch is a Latch that is not Run: asked for a newer key, it
// polls the host itself.
type pollingLatch struct{ *keylatch.Latcher }

func (l pollingLatch) WaitNewKey(ctx context.Context, _ *keylatch.Snapshot) *keylatch.Snapshot {
	l.Poll(ctx)
	return l.Current()
}
