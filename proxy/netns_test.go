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

	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// TestNetnsProduction runs the proxy with its production dialer and
// ProcResolver against msptest listening on the real metadata addresses, in
// a network namespace the test creates (unshare -n), so the real addresses
// exist only on that namespace's loopback. The test binary re-executes
// itself inside the namespace.
func TestNetnsProduction(t *testing.T) {
	if !testenv.InNetns(t) {
		return
	}
	ls, err := msptest.ListenMetadata()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	rules := &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "netns-imds",
		Rules: &msp.AccessControlRules{
			Privileges:      []msp.Privilege{{Name: "inst", Path: "/metadata/instance"}},
			Roles:           []msp.Role{{Name: "r", Privileges: []string{"inst"}}},
			Identities:      []msp.Identity{{Name: "me", ProcessName: filepath.Base(exe), UserName: "root"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"me"}}},
		}}
	host := msptest.NewHost(&msptest.Options{
		Listeners: ls,
		Rules: map[msp.Endpoint]*msp.AuthorizationItem{
			msp.EndpointIMDS:       rules,
			msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "netns-ws"},
		},
	})
	defer host.Close()
	store, err := keylatch.OpenStore(&keylatch.StoreOptions{Dir: filepath.Join(t.TempDir(), "keys")})
	if err != nil {
		t.Fatal(err)
	}
	// The production client: it dials the real WireServer address.
	latcher, err := keylatch.NewLatcher(&keylatch.LatcherOptions{Client: keylatch.NewClient(nil), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 20 && (latcher.Current() == nil || latcher.Current().Signer == nil); i++ {
		latcher.Poll(ctx)
	}
	if s := latcher.Current(); s == nil || s.Signer == nil {
		t.Fatalf("no key latched: %+v", latcher.Status())
	}

	lookup := &mapLookup{m: map[uint16]msp.ConnectRecord{}}
	srv, err := New(Config{
		Resolver: NewProcResolver(lookup, nil),
		Latch:    latcher,
		Now:      latcher.HostNow,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, pln)
	defer srv.Close()

	port := uint16(41000)
	do := func(dst netip.AddrPort, uri string) int {
		port++
		lookup.mu.Lock()
		lookup.m[port] = msp.ConnectRecord{PID: uint32(os.Getpid()), UID: uint32(os.Geteuid()), OriginalDst: dst}
		lookup.mu.Unlock()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}}
		c, err := d.Dial("tcp", pln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nMetadata: true\r\nConnection: close\r\n\r\n", uri, dst.Addr())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return rawStatus(string(b))
	}
	for _, tc := range []struct {
		dst      netip.AddrPort
		uri      string
		want     int
		hostSees bool
	}{
		{msp.IMDSAddr, "/metadata/instance?api-version=2021-02-01", 200, true},
		{msp.IMDSAddr, "/metadata/identity/oauth2/token", 403, false},
		{msp.WireServerAddr, "/machine?comp=goalstate", 200, true},
	} {
		host.ResetRequests()
		if st := do(tc.dst, tc.uri); st != tc.want {
			t.Errorf("%s%s: %d, want %d", tc.dst, tc.uri, st, tc.want)
		}
		reqs := host.Requests()
		if (len(reqs) == 1) != tc.hostSees {
			t.Errorf("%s: host saw %d requests", tc.uri, len(reqs))
		}
		if tc.hostSees && len(reqs) == 1 && !reqs[0].SignatureValid {
			t.Errorf("%s: host refused the signature: %s", tc.uri, reqs[0].SignatureError)
		}
	}
	// A connection nobody recorded gets 421.
	c, err := net.Dial("tcp", pln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if rawStatus(string(b)) != 421 {
		t.Errorf("unrecorded connection: %q", b)
	}
}
