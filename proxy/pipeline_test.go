package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

// denyTokenRules is an IMDS rule set in Enforce that denies everything but
// /metadata/instance.
func denyTokenRules() map[msp.Endpoint]*msp.AuthorizationItem {
	return map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "imds-deny",
			Rules: &msp.AccessControlRules{
				Privileges:      []msp.Privilege{{Name: "inst", Path: "/metadata/instance"}},
				Roles:           []msp.Role{{Name: "r", Privileges: []string{"inst"}}},
				Identities:      []msp.Identity{{Name: "alice", UserName: "alice"}},
				RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"alice"}}},
			}},
		msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessDeny, ID: "ws-deny",
			Rules: &msp.AccessControlRules{
				Privileges:      []msp.Privilege{{Name: "gs", Path: "/machine", QueryParameters: map[string]string{"comp": "goalstate"}}},
				Roles:           []msp.Role{{Name: "r", Privileges: []string{"gs"}}},
				Identities:      []msp.Identity{{Name: "root", UserName: "root"}},
				RoleAssignments: []msp.RoleAssignment{{Role: "r", Identities: []string{"root"}}},
			}},
	}
}

// TestBypassVariantsNeverReachHost sends the encoding and bypass variants of
// docs/protocol.md §10.1 (S6, S20, D1, C7) against a deny rule: none may reach
// the host.
func TestBypassVariantsNeverReachHost(t *testing.T) {
	key := testKey(t, 2)
	host := newFakeHost(t)
	host.addKey(key)
	imds := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	imds.snap.Store(snapshotFor(t, 1, denyTokenRules(), &key))
	ws := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.WireServerAddr)})
	ws.snap.Store(snapshotFor(t, 1, denyTokenRules(), &key))

	const q = "?api-version=2018-02-01&resource=https://management.azure.com/"
	imdsVariants := []string{
		"/metadata/identity/oauth2/token" + q,
		"/metadata%2Fidentity%2Foauth2%2Ftoken" + q,
		"/metadata%2fidentity%2foauth2%2ftoken" + q,
		"/metadata%252Fidentity/oauth2/token" + q,
		"/metadata/identity/oauth2/token%3Fapi-version=2018-02-01",
		"/metadata/instance/../identity/oauth2/token" + q,
		"/metadata/instance/%2E%2E/identity/oauth2/token" + q,
		"/metadata/instance/%2e%2e/identity/oauth2/token" + q,
		"/metadata/./identity/oauth2/token" + q,
		"//metadata///identity/oauth2/token" + q,
		"/metadata/identity/oauth2/token;x=1" + q,
		"/metadata;x=1/identity/oauth2/token" + q,
		"/METADATA/IDENTITY/OAUTH2/TOKEN" + q,
		"/metadata/identity/oauth2/token." + q,
		"/metadata/identity/oauth2/token#x",
		"/metadata/\u0131dentity/oauth2/token" + q,
		"/metadata/%C4%B1dentity/oauth2/token" + q,
		"/metadata/instance%2F..%2Fidentity/oauth2/token" + q,
		"/metadata/instance-evil/identity" + q,
		"/metadata/instancefoo" + q,
		"/metadata/instance/..;/identity/oauth2/token" + q,
		"http://169.254.169.254/metadata/identity/oauth2/token" + q,
		"http://0xa9fea9fe/metadata/instance" + q,
		"http://2852039166/metadata/instance" + q,
		"http://[::ffff:169.254.169.254]/metadata/instance" + q,
		"http://example.com/metadata/instance" + q,
	}
	wsVariants := []string{
		"/machine?comp=certificates",
		"/machine?comp=Certificates",
		"/machine%3Fcomp=certificates",
		"/machine/../machine?comp=certificates",
		"//machine///?comp=certificates",
		"/machine%2F..%2Fmachine?comp=certificates",
		"/machine?comp=goalstat",
		"/machinex?comp=goalstate",
		"http://0xa83f8110/machine?comp=goalstate",
	}
	run := func(t *testing.T, tp *testProxy, hostName string, variants []string) {
		for _, v := range variants {
			t.Run(v, func(t *testing.T) {
				before := len(host.requests())
				resp := tp.raw(t, "GET "+v+" HTTP/1.1\r\nHost: "+hostName+"\r\nMetadata: true\r\n\r\n")
				if st := rawStatus(resp); st < 400 || st >= 500 {
					t.Errorf("status %d, want 4xx\n%s", st, resp)
				}
				if n := len(host.requests()) - before; n != 0 {
					t.Errorf("host saw %d requests", n)
				}
			})
		}
	}
	t.Run("imds", func(t *testing.T) { run(t, imds, "169.254.169.254", imdsVariants) })
	t.Run("wireserver", func(t *testing.T) { run(t, ws, "168.63.129.16", wsVariants) })
	// A Host header in another form than the IP changes nothing.
	t.Run("host-header-forms", func(t *testing.T) {
		for _, h := range []string{"0xa9fea9fe", "2852039166", "[::ffff:169.254.169.254]", "example.com"} {
			resp := imds.raw(t, "GET /metadata/identity/oauth2/token"+q+" HTTP/1.1\r\nHost: "+h+"\r\n\r\n")
			if st := rawStatus(resp); st != 403 {
				t.Errorf("Host %s: status %d, want 403", h, st)
			}
		}
	})

	// The control: what the rules allow still works, in its accepted
	// equivalent forms too (value case-insensitive).
	for _, tc := range []struct {
		tp   *testProxy
		host string
		uri  string
	}{
		{imds, "169.254.169.254", "/metadata/instance?api-version=2021-02-01"},
		{imds, "169.254.169.254", "/metadata/instance/compute?api-version=2021-02-01"},
		{ws, "168.63.129.16", "/machine?comp=goalstate"},
		{ws, "168.63.129.16", "/machine?comp=GOALSTATE"},
	} {
		before := len(host.requests())
		resp := tc.tp.raw(t, "GET "+tc.uri+" HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n")
		if st := rawStatus(resp); st != 200 {
			t.Errorf("%s: status %d, want 200\n%s", tc.uri, st, resp)
		}
		reqs := host.requests()[before:]
		if len(reqs) != 1 || reqs[0].VerifyErr != nil || reqs[0].Msg.RawURI != tc.uri {
			t.Errorf("%s: host requests %+v", tc.uri, reqs)
		}
	}
}

// TestDirectConnection: a connection the resolver does not know gets 421
// with Connection: close, never reaches the host, and carries no caller in
// its audit record; the local endpoints behave as §4.3 and §7.3 say.
func TestDirectConnection(t *testing.T) {
	host := newFakeHost(t)
	// The handler hands over each request's context: how many calls
	// there were, and whether each context ended with its request.
	provisionCtx := make(chan context.Context, 10)
	tp := newTestProxy(t, host, proxyOpts{caller: nil, tweak: func(c *Config) {
		c.Provision = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			provisionCtx <- r.Context()
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			fmt.Fprintf(w, `{"finished":true,"errorMessage":"%s"}`, r.Header.Get("X-Ms-Azure-Time-Tick"))
		})
		c.AggregateStatus = func(context.Context) ([]byte, error) { return []byte(`{"x":1}`), nil }
	}})
	tp.snap.Store(snapshotFor(t, 1, nil, nil))

	for _, tc := range []struct {
		name, req string
		want      int
		close     bool
		body      string
	}{
		{"root", "GET / HTTP/1.1\r\nHost: 127.0.0.1:3080\r\n\r\n", 421, true, ""},
		{"metadata", "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n", 421, true, ""},
		{"traversal", "GET /test/../ HTTP/1.1\r\nHost: x\r\n\r\n", 403, true, ""},
		{"double-slash", "GET //x HTTP/1.1\r\nHost: x\r\n\r\n", 403, true, ""},
		{"status", "GET /gpa-aggregated-status HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n", 403, true, ""},
		{"status-no-metadata", "GET /gpa-aggregated-status HTTP/1.1\r\nHost: x\r\n\r\n", 400, true, ""},
		{"provision", "GET /provision HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nx-ms-azure-time-tick: 17\r\nConnection: close\r\n\r\n", 200, true, `{"finished":true,"errorMessage":"17"}`},
		{"provision-no-metadata", "GET /provision HTTP/1.1\r\nHost: x\r\n\r\n", 400, true, ""},
		{"provision-query", "GET /provision?x HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n", 421, true, ""},
		{"method", "TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, true, "Method Not Allowed"},
		{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, true, "Method Not Allowed"},
		{"body-too-large", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 102401\r\n\r\n", 421, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := tp.raw(t, tc.req)
			if st := rawStatus(resp); st != tc.want {
				t.Fatalf("status %d, want %d\n%s", st, tc.want, resp)
			}
			if tc.close && !strings.Contains(resp, "\r\nConnection: close\r\n") {
				t.Errorf("no Connection: close\n%s", resp)
			}
			if tc.body != "" && !strings.HasSuffix(resp, "\r\n\r\n"+tc.body) {
				t.Errorf("body: %q, want %q", resp, tc.body)
			}
			if tc.want == 405 && !strings.Contains(resp, "\r\nAllow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n") {
				t.Errorf("405 without Allow\n%s", resp)
			}
		})
	}
	if n := len(provisionCtx); n != 1 {
		t.Errorf("provision handler called %d times, want 1", n)
	} else if err := (<-provisionCtx).Err(); err == nil {
		t.Errorf("the provision request's context did not end with the request")
	}
	if n := len(host.requests()); n != 0 {
		t.Errorf("host saw %d requests", n)
	}
	for _, r := range tp.waitRecords(t, 12) {
		if r.UserName != "empty" || r.IP != "None" || r.Forwarded || r.Decision != "" {
			t.Errorf("record of a direct connection names a caller or decision: %+v", r)
		}
	}
}

// TestAggregateStatus: only elevated callers read the status.
func TestAggregateStatus(t *testing.T) {
	host := newFakeHost(t)
	status := func(context.Context) ([]byte, error) { return []byte(`{"proxyAgentStatus":{}}`), nil }
	for _, tc := range []struct {
		name   string
		caller *Caller
		want   int
	}{
		{"root", rootCaller(msp.WireServerAddr), 200},
		{"user", userCaller(msp.WireServerAddr), 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTestProxy(t, host, proxyOpts{caller: tc.caller, tweak: func(c *Config) { c.AggregateStatus = status }})
			resp := tp.raw(t, "GET /gpa-aggregated-status HTTP/1.1\r\nHost: 168.63.129.16\r\nMetadata: true\r\nConnection: close\r\n\r\n")
			if st := rawStatus(resp); st != tc.want {
				t.Fatalf("status %d, want %d\n%s", st, tc.want, resp)
			}
			if tc.want == 200 && (!strings.HasSuffix(resp, `{"proxyAgentStatus":{}}`) || !strings.Contains(resp, "Content-Type: application/json; charset=utf-8")) {
				t.Errorf("response %q", resp)
			}
		})
	}
	if n := len(host.requests()); n != 0 {
		t.Errorf("host saw %d requests", n)
	}
}

// TestHeadersOnTheWire: the client's MSP headers are removed before
// anything else, hop-by-hop headers are dropped, nothing like
// X-Forwarded-For is added, and the signed set is exactly the sent set.
func TestHeadersOnTheWire(t *testing.T) {
	key := testKey(t, 3)
	host := newFakeHost(t)
	host.addKey(key)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})

	req := "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\n" +
		"Host: 169.254.169.254\r\n" +
		"User-Agent: curl/8.5.0\r\n" +
		"Accept: */*\r\n" +
		"Metadata: true\r\n" +
		"x-ms-azure-host-authorization: Azure-HMAC-SHA256 forged 0000\r\n" +
		"X-MS-Azure-Host-Claims: { \"isRoot\": \"true\"}\r\n" +
		"x-ms-azure-host-date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" +
		"Connection: X-Secret-Hop, close\r\n" +
		"X-Secret-Hop: 1\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
		"TE: trailers\r\n" +
		"Upgrade: websocket\r\n" +
		"X-Forwarded-For: 10.0.0.1\r\n" +
		"\r\n"
	for _, withKey := range []bool{true, false} {
		t.Run(fmt.Sprintf("key=%v", withKey), func(t *testing.T) {
			if withKey {
				tp.snap.Store(snapshotFor(t, 1, nil, &key))
			} else {
				tp.snap.Store(snapshotFor(t, 1, nil, nil))
			}
			before := len(host.requests())
			resp := tp.raw(t, req)
			if st := rawStatus(resp); st != 200 {
				t.Fatalf("status %d\n%s", st, resp)
			}
			if !strings.Contains(resp, "\r\nx-ms-azure-host-authorization: value\r\n") || strings.Contains(resp, "from-host") {
				t.Errorf("response marker missing or host's value kept\n%s", resp)
			}
			hr := host.requests()[before]
			want := []msp.HeaderField{
				{Name: "Host", Value: "169.254.169.254"},
				{Name: "User-Agent", Value: "curl/8.5.0"},
				{Name: "Accept", Value: "*/*"},
				{Name: "Metadata", Value: "true"},
				{Name: "X-Forwarded-For", Value: "10.0.0.1"},
				{Name: msp.HeaderClaims, Value: `{ "isRoot": "false"}`},
				{Name: msp.HeaderDate, Value: "Wed, 23 Apr 2025 12:00:00 GMT"},
			}
			got := hr.Msg.Header
			if withKey {
				auth, _ := hr.Msg.Get(msp.HeaderAuthorization)
				want = append(want, msp.HeaderField{Name: msp.HeaderAuthorization, Value: auth})
				if hr.VerifyErr != nil || hr.KeyGUID != key.GUID {
					t.Errorf("signature: %v (key %q)", hr.VerifyErr, hr.KeyGUID)
				}
				// §3.4 vector 2 plus the client's X-Forwarded-For: the
				// signed string is exactly the wire head.
				sts, _ := msp.StringToSign(&hr.Msg)
				wantSTS := "GET\n\naccept:*/*\nhost:169.254.169.254\nmetadata:true\nuser-agent:curl/8.5.0\n" +
					"x-forwarded-for:10.0.0.1\nx-ms-azure-host-claims:{ \"isRoot\": \"false\"}\n" +
					"x-ms-azure-host-date:Wed, 23 Apr 2025 12:00:00 GMT\n/metadata/instance\napi-version=2021-02-01"
				if sts != wantSTS {
					t.Errorf("string to sign\n%q\nwant\n%q", sts, wantSTS)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("wire headers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLimits: header bytes, URI length, body size, framing conflicts and
// absolute-form targets are refused with the right status and never reach
// the host.
func TestLimits(t *testing.T) {
	key := testKey(t, 4)
	host := newFakeHost(t)
	host.addKey(key)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, &key))
	big := strings.Repeat("a", DefaultMaxHeaderBytes)
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"uri", "GET /" + strings.Repeat("a", 65<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"uri-just-over", "GET /" + strings.Repeat("a", DefaultMaxURIBytes) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"header-line", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431},
		{"header-block", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: "+strings.Repeat("b", 1000)+"\r\n", 40) + "\r\n", 431},
		{"header-count", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 120) + "\r\n", 431},
		{"body-cl", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nContent-Length: 102401\r\n\r\n", 413},
		{"body-chunked", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 102401, strings.Repeat("z", 102401)), 413},
		{"cl-and-te", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400},
		{"two-cl", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"signed-cl", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", 400},
		{"minus-zero-cl", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nContent-Length: -0\r\n\r\n", 400},
		{"te-gzip", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"no-host", "GET /metadata/x HTTP/1.1\r\n\r\n", 400},
		{"two-hosts", "GET /metadata/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"folding", "GET /metadata/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"bad-version", "GET /metadata/x HTTP/9.9\r\nHost: a\r\n\r\n", 505},
		{"bad-request-line", "GARBAGE\r\n\r\n", 400},
		{"ctl-in-header", "GET /metadata/x HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400},
		{"absolute-other-host", "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 403},
		{"absolute-https", "GET https://169.254.169.254/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", 400},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"userinfo", "GET http://u:p@169.254.169.254/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"expect", "POST /metadata/x HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(host.requests())
			resp := tp.raw(t, tc.req)
			if st := rawStatus(resp); st != tc.want {
				t.Errorf("status %d, want %d\n%.300s", st, tc.want, resp)
			}
			if !strings.Contains(resp, "Connection: close") {
				t.Errorf("connection not closed\n%.300s", resp)
			}
			if n := len(host.requests()) - before; n != 0 {
				t.Errorf("host saw %d requests", n)
			}
		})
	}

	// Absolute form naming the caller's own destination is served, as
	// origin form.
	before := len(host.requests())
	resp := tp.raw(t, "GET http://169.254.169.254/metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
	if st := rawStatus(resp); st != 200 {
		t.Fatalf("absolute-form to own destination: %d\n%s", st, resp)
	}
	if hr := host.requests()[before]; hr.Msg.RawURI != "/metadata/instance" || hr.VerifyErr != nil {
		t.Errorf("host saw %q (%v)", hr.Msg.RawURI, hr.VerifyErr)
	}
}

// TestBodies: chunked and Expect: 100-continue bodies are buffered, sent
// with a Content-Length and signed; skip-sig bodies from root are streamed
// unsigned up to 100 MiB.
func TestBodies(t *testing.T) {
	key := testKey(t, 5)
	host := newFakeHost(t)
	host.addKey(key)
	root := newTestProxy(t, host, proxyOpts{caller: rootCaller(msp.WireServerAddr)})
	root.snap.Store(snapshotFor(t, 1, nil, &key))
	user := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	user.snap.Store(snapshotFor(t, 1, nil, &key))

	t.Run("chunked-signed", func(t *testing.T) {
		before := len(host.requests())
		resp := root.raw(t, "POST /machine?comp=health HTTP/1.1\r\nHost: 168.63.129.16\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n")
		if st := rawStatus(resp); st != 200 {
			t.Fatalf("status %d\n%s", st, resp)
		}
		hr := host.requests()[before]
		cl, _ := hr.Msg.Get("Content-Length")
		_, te := hr.Msg.Get("Transfer-Encoding")
		if string(hr.Msg.Body) != "hello" || cl != "5" || te || hr.VerifyErr != nil {
			t.Errorf("host saw body %q CL %q TE %v verify %v", hr.Msg.Body, cl, te, hr.VerifyErr)
		}
	})
	t.Run("expect-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", root.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /machine?comp=health HTTP/1.1\r\nHost: 168.63.129.16\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
		buf := make([]byte, 25)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HTTP/1.1 100 Continue\r\n\r\n" {
			t.Fatalf("got %q, %v", buf, err)
		}
		io.WriteString(c, "hello")
		rest, _ := io.ReadAll(c)
		if rawStatus(string(rest)) != 200 {
			t.Errorf("final response %q", rest)
		}
	})
	t.Run("skip-sig-root", func(t *testing.T) {
		body := strings.Repeat("L", 300<<10) // over the signed limit
		before := len(host.requests())
		resp := root.raw(t, fmt.Sprintf("PUT /vmAgentLog HTTP/1.1\r\nHost: 168.63.129.16\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
		if st := rawStatus(resp); st != 200 {
			t.Fatalf("status %d\n%.200s", st, resp)
		}
		hr := host.requests()[before]
		_, signed := hr.Msg.Get(msp.HeaderAuthorization)
		claims, _ := hr.Msg.Get(msp.HeaderClaims)
		if signed || string(hr.Msg.Body) != body || claims != msp.ClaimsHeaderRoot {
			t.Errorf("skip-sig: signed %v, body %d bytes, claims %q", signed, len(hr.Msg.Body), claims)
		}
	})
	t.Run("skip-sig-chunked", func(t *testing.T) {
		before := len(host.requests())
		resp := root.raw(t, "POST /machine/?comp=telemetrydata HTTP/1.1\r\nHost: 168.63.129.16\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n<a/>\r\n0\r\n\r\n")
		if st := rawStatus(resp); st != 200 {
			t.Fatalf("status %d\n%s", st, resp)
		}
		hr := host.requests()[before]
		if string(hr.Msg.Body) != "<a/>" {
			t.Errorf("body %q", hr.Msg.Body)
		}
	})
	t.Run("skip-sig-user-is-signed", func(t *testing.T) {
		before := len(host.requests())
		resp := user.raw(t, "PUT /vmAgentLog HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		if st := rawStatus(resp); st != 200 {
			t.Fatalf("status %d\n%s", st, resp)
		}
		if hr := host.requests()[before]; hr.VerifyErr != nil {
			t.Errorf("non-root skip-sig URL not signed: %v", hr.VerifyErr)
		}
		resp = user.raw(t, fmt.Sprintf("PUT /vmAgentLog HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: %d\r\n\r\n", 200<<10))
		if st := rawStatus(resp); st != 413 {
			t.Errorf("non-root skip-sig URL over 100 KiB: %d, want 413", st)
		}
	})
	t.Run("keep-alive-and-head", func(t *testing.T) {
		cl := user.client()
		for i := range 3 {
			r, err := cl.Head("http://169.254.169.254/metadata/instance")
			if err != nil {
				t.Fatal(i, err)
			}
			r.Body.Close()
			if r.StatusCode != 200 || r.Header.Get(msp.HeaderAuthorization) != msp.ResponseMarker {
				t.Errorf("HEAD %d: %d %v", i, r.StatusCode, r.Header)
			}
			r, err = cl.Post("http://169.254.169.254/metadata/x", "text/plain", strings.NewReader("abc"))
			if err != nil {
				t.Fatal(i, err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if string(b) != "host saw POST /metadata/x" {
				t.Errorf("POST %d: %q", i, b)
			}
		}
	})
}

// TestDenyBody: an Enforce denial names the rule set in a short JSON body.
func TestDenyBody(t *testing.T) {
	host := newFakeHost(t)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, denyTokenRules(), nil))
	resp, err := tp.client().Get("http://169.254.169.254/metadata/identity/oauth2/token")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got denyBody
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := denyBody{Error: "Forbidden", Endpoint: "imds", Mode: "enforce", RuleSetID: "imds-deny", Reason: "default"}
	if diff := cmp.Diff(want, got); diff != "" || resp.StatusCode != 403 {
		t.Errorf("status %d, body (-want +got):\n%s", resp.StatusCode, diff)
	}
}

// A request that arrives before the latch has polled once (a restart whose
// pinned redirect is already live) waits for the first known snapshot and
// goes out signed, instead of unsigned under the Unknown state; without a
// known snapshot in StartupWait it proceeds as upstream would.
func TestRequestWaitsForKnownState(t *testing.T) {
	key := testKey(t, 3)
	host := newFakeHost(t)
	host.addKey(key)
	known := make(chan *keylatch.Snapshot, 1)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr), tweak: func(c *Config) {
		c.StartupWait = 500 * time.Millisecond
		c.Latch = waitingLatch{c.Latch, func(ctx context.Context) *keylatch.Snapshot {
			select {
			case s := <-known:
				return s
			case <-ctx.Done():
				return nil
			}
		}}
	}})
	tp.snap.Store(&keylatch.Snapshot{State: msp.SecureChannelUnknown})
	go func() {
		time.Sleep(100 * time.Millisecond)
		known <- snapshotFor(t, 1, denyTokenRules(), &key)
	}()
	resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
	if rawStatus(resp) != 200 {
		t.Fatalf("status %d\n%s", rawStatus(resp), resp)
	}
	reqs := host.requests()
	if len(reqs) != 1 || reqs[0].VerifyErr != nil || reqs[0].KeyGUID != key.GUID {
		t.Fatalf("host saw %d requests, want one signed with %s: %+v", len(reqs), key.GUID, reqs)
	}

	// Nothing known in time: forwarded unsigned after StartupWait.
	start := time.Now()
	if resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"); rawStatus(resp) != 200 {
		t.Fatalf("after StartupWait: %s", resp)
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("returned after %v, before StartupWait", el)
	}
	if reqs := host.requests(); len(reqs) != 2 {
		t.Fatalf("host saw %d requests", len(reqs))
	}
}

// waitingLatch is a Latch whose WaitKnown is the test's.
type waitingLatch struct {
	Latch
	known func(ctx context.Context) *keylatch.Snapshot
}

func (l waitingLatch) WaitKnown(ctx context.Context) *keylatch.Snapshot { return l.known(ctx) }

// TestFragmentRemoved: a target's #fragment goes nowhere: the host sees,
// and the signature covers, the target without it, and the rules match
// that target too.
func TestFragmentRemoved(t *testing.T) {
	key := testKey(t, 5)
	host := newFakeHost(t)
	host.addKey(key)
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, denyTokenRules(), &key))
	tests := []struct {
		target, wantURI string
		wantStatus      int
	}{
		{"/metadata/instance?api-version=2021-02-01#frag", "/metadata/instance?api-version=2021-02-01", 200},
		{"/metadata/instance#?api-version=x", "/metadata/instance", 200},
		{"/metadata/instance?a=b#", "/metadata/instance?a=b", 200},
		// The rules see the target without the fragment: still the token path.
		{"/metadata/identity/oauth2/token#/metadata/instance", "", 403},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			before := len(host.requests())
			resp := tp.raw(t, "GET "+tt.target+" HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n")
			if st := rawStatus(resp); st != tt.wantStatus {
				t.Fatalf("status %d, want %d\n%s", st, tt.wantStatus, resp)
			}
			reqs := host.requests()[before:]
			if tt.wantURI == "" {
				if len(reqs) != 0 {
					t.Fatalf("a denied request reached the host: %q", reqs[0].Msg.RawURI)
				}
				return
			}
			if len(reqs) != 1 || reqs[0].Msg.RawURI != tt.wantURI || reqs[0].VerifyErr != nil {
				t.Fatalf("host saw %+v, want one request for %q with a valid signature", reqs, tt.wantURI)
			}
		})
	}
}

// TestResponseHeadersPassThrough: the host's own x-ms-azure-host-date and
// other fields reach the caller; hop-by-hop fields and the fields the
// host's Connection names do not; the authorization field is the proxy's
// marker, not the host's.
func TestResponseHeadersPassThrough(t *testing.T) {
	key := testKey(t, 6)
	host := newFakeHost(t)
	host.addKey(key)
	host.respond = func(c net.Conn, w *bufio.Writer, hr *hostRequest) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Conn-Only\r\nX-Conn-Only: 1\r\n"+
			"Keep-Alive: timeout=5\r\nx-ms-azure-host-date: Thu, 04 Dec 2026 10:00:00 GMT\r\nX-Ms-Azure-Host-Claims: {}\r\n"+
			"x-ms-azure-host-authorization: from-host\r\nX-Request-Id: abc\r\n\r\nok")
		return w.Flush() == nil
	}
	tp := newTestProxy(t, host, proxyOpts{caller: userCaller(msp.IMDSAddr)})
	tp.snap.Store(snapshotFor(t, 1, nil, &key))
	resp := tp.raw(t, "GET /metadata/instance HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n")
	for _, want := range []string{"\r\nx-ms-azure-host-date: Thu, 04 Dec 2026 10:00:00 GMT\r\n", "\r\nX-Ms-Azure-Host-Claims: {}\r\n",
		"\r\nX-Request-Id: abc\r\n", "\r\nx-ms-azure-host-authorization: value\r\n"} {
		if !strings.Contains(resp, want) {
			t.Errorf("answer lacks %q\n%s", want, resp)
		}
	}
	for _, gone := range []string{"X-Conn-Only", "Keep-Alive", "from-host"} {
		if strings.Contains(resp, gone) {
			t.Errorf("answer carries %q\n%s", gone, resp)
		}
	}
}
