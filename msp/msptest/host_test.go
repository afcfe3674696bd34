package msptest

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// rawDo sends one request with exactly the given header lines and returns
// the response. Signing, when key is valid, covers those lines as sent.
func rawDo(t *testing.T, addr, method, uri string, hdr []msp.HeaderField, body []byte, key msp.Key) *http.Response {
	t.Helper()
	if key.Valid() {
		s, err := msp.NewSigner(key)
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Sign(&msp.Message{Method: method, RawURI: uri, Header: hdr, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		hdr = append(hdr, msp.HeaderField{Name: msp.HeaderAuthorization, Value: v})
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(method + " " + uri + " HTTP/1.1\r\n")
	for _, h := range hdr {
		b.WriteString(h.Name + ": " + h.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	resp.Body = readAllBody(t, resp.Body)
	return resp
}

func readAllBody(t *testing.T, rc io.ReadCloser) io.ReadCloser {
	t.Helper()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return io.NopCloser(strings.NewReader(string(b)))
}

func bodyString(t *testing.T, r *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

func agentHeaders(host string, bodyLen int) []msp.HeaderField {
	return []msp.HeaderField{
		{Name: msp.HeaderDate, Value: msp.FormatDate(time.Now())},
		{Name: "host", Value: host},
		{Name: msp.HeaderClaims, Value: msp.ClaimsHeaderRoot},
		{Name: "content-length", Value: strconv.Itoa(bodyLen)},
		{Name: "Metadata", Value: "True "},
	}
}

type statusView struct {
	KeyGUID              *string         `json:"keyGuid"`
	KeyIncarnationID     *uint32         `json:"keyIncarnationId"`
	SecureChannelEnabled *bool           `json:"secureChannelEnabled"`
	SecureChannelState   *string         `json:"secureChannelState"`
	Version              string          `json:"version"`
	AuthorizationRules   json.RawMessage `json:"authorizationRules"`
}

func getStatus(t *testing.T, h *Host) statusView {
	t.Helper()
	r := rawDo(t, h.WireServerAddr().String(), "GET", "/secure-channel/status", agentHeaders("168.63.129.16", 0), nil, msp.Key{})
	if r.StatusCode != 200 {
		t.Fatalf("status: %d", r.StatusCode)
	}
	var v statusView
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// latch runs the key protocol as an agent does and returns the key.
func latch(t *testing.T, h *Host) msp.Key {
	t.Helper()
	addr := h.WireServerAddr().String()
	body := []byte(`{"authorizationScheme": "Azure-HMAC-SHA256"}`)
	hdr := append(agentHeaders("168.63.129.16", len(body)), msp.HeaderField{Name: "Content-Type", Value: "application/json"})
	r := rawDo(t, addr, "POST", "/secure-channel/key", hdr, body, msp.Key{})
	if r.StatusCode != 200 {
		t.Fatalf("acquire: %d", r.StatusCode)
	}
	b, _ := io.ReadAll(r.Body)
	k, err := msp.ParseKeyJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	r = rawDo(t, addr, "POST", "/secure-channel/key/"+k.GUID+"/key-attestation", agentHeaders("168.63.129.16", 0), nil, k)
	if r.StatusCode != 200 {
		t.Fatalf("attest: %d %s", r.StatusCode, bodyString(t, r))
	}
	return k
}

func TestKeyProtocol(t *testing.T) {
	h := NewHost(&Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointWireServer: {Mode: msp.ModeEnforce, ID: "ws"},
	}})
	defer h.Close()

	if st := getStatus(t, h); st.KeyGUID != nil {
		t.Fatalf("keyGuid before any attestation = %q, want null", *st.KeyGUID)
	}
	k := latch(t, h)
	st := getStatus(t, h)
	if st.KeyGUID == nil || *st.KeyGUID != k.GUID {
		t.Fatalf("keyGuid after attestation = %v, want %s", st.KeyGUID, k.GUID)
	}
	if k.Incarnation == nil || *k.Incarnation != 1 {
		t.Fatalf("key incarnation = %v, want 1", k.Incarnation)
	}
	lk, ok := h.LatchedKey()
	if !ok || !lk.Equal(k) {
		t.Fatal("LatchedKey does not return the attested key")
	}
	if n := len(h.RequestsTo("POST", "/secure-channel/key")); n != 1 {
		t.Fatalf("acquisitions recorded = %d, want 1", n)
	}
}

func TestAttestationNeedsTheNamedKey(t *testing.T) {
	h := NewHost(nil)
	defer h.Close()
	addr := h.WireServerAddr().String()
	body := []byte(`{"authorizationScheme": "Azure-HMAC-SHA256"}`)
	acquire := func() msp.Key {
		r := rawDo(t, addr, "POST", "/secure-channel/key", agentHeaders("h", len(body)), body, msp.Key{})
		b, _ := io.ReadAll(r.Body)
		k, err := msp.ParseKeyJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k1, k2 := acquire(), acquire()
	stranger, _ := msp.NewKey("11111111-2222-3333-4444-555555555555", strings.Repeat("ab", 32))
	tests := []struct {
		name string
		sign msp.Key
		want int
	}{
		{"unsigned", msp.Key{}, 401},
		{"signed with another issued key", k2, 401},
		{"signed with an unknown key", stranger, 401},
		{"signed with the named key", k1, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawDo(t, addr, "POST", "/secure-channel/key/"+k1.GUID+"/key-attestation", agentHeaders("h", 0), nil, tt.sign)
			if r.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d", r.StatusCode, tt.want)
			}
		})
	}
	if lk, _ := h.LatchedKey(); lk.GUID != k1.GUID {
		t.Fatalf("latched %s, want %s", lk.GUID, k1.GUID)
	}
}

// TestRawHeadIsVerified signs header lines whose order, case and Host
// position net/http's server would change, and checks the host verifies
// and records them as sent.
func TestRawHeadIsVerified(t *testing.T) {
	h := NewHost(&Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointWireServer: {Mode: msp.ModeEnforce, ID: "ws"},
	}})
	defer h.Close()
	k := latch(t, h)
	h.ResetRequests()
	hdr := []msp.HeaderField{
		{Name: "x-ms-version", Value: "2012-11-30"},
		{Name: "X-Dup", Value: "one"},
		{Name: "HOST", Value: "168.63.129.16"},
		{Name: "x-dup", Value: "two"},
		{Name: msp.HeaderClaims, Value: msp.ClaimsHeaderRoot},
		{Name: msp.HeaderDate, Value: "Wed, 23 Apr 2025 12:00:00 GMT"},
	}
	r := rawDo(t, h.WireServerAddr().String(), "GET", "/machine?comp=goalstate&B=1", hdr, nil, k)
	if r.StatusCode != 200 {
		t.Fatalf("signed goalstate: %d %s", r.StatusCode, bodyString(t, r))
	}
	if !strings.Contains(bodyString(t, r), "<GoalState") {
		t.Fatal("goal state body missing")
	}
	reqs := h.Requests()
	if len(reqs) != 1 {
		t.Fatalf("recorded %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if !got.Signed || !got.SignatureValid || got.KeyGUID != k.GUID {
		t.Fatalf("record: signed=%v valid=%v guid=%q err=%q", got.Signed, got.SignatureValid, got.KeyGUID, got.SignatureError)
	}
	if diff := cmp.Diff(hdr, got.Header[:len(hdr)]); diff != "" {
		t.Fatalf("recorded header lines differ from the wire (-sent +recorded):\n%s", diff)
	}
	if got.RawURI != "/machine?comp=goalstate&B=1" {
		t.Fatalf("raw URI %q", got.RawURI)
	}
}

func TestEnforcement(t *testing.T) {
	type call struct {
		ep     msp.Endpoint
		uri    string
		signed bool
		extra  []msp.HeaderField
	}
	tests := []struct {
		name  string
		modes map[msp.Endpoint]msp.Mode
		call  call
		want  int
		valid bool
	}{
		{"ws enforce unsigned", map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce},
			call{ep: msp.EndpointWireServer, uri: "/machine?comp=goalstate"}, 401, false},
		{"ws enforce signed", map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce},
			call{ep: msp.EndpointWireServer, uri: "/machine?comp=goalstate", signed: true}, 200, true},
		{"ws audit unsigned", map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeAudit},
			call{ep: msp.EndpointWireServer, uri: "/machine?comp=goalstate"}, 200, false},
		{"ws enforce telemetry is skip-sig", map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce},
			call{ep: msp.EndpointWireServer, uri: "/machine/?comp=telemetrydata"}, 200, false},
		{"imds enforce unsigned", map[msp.Endpoint]msp.Mode{msp.EndpointIMDS: msp.ModeEnforce},
			call{ep: msp.EndpointIMDS, uri: "/metadata/instance?api-version=2021-02-01", extra: []msp.HeaderField{{Name: "Metadata", Value: "true"}}}, 401, false},
		{"imds enforce signed", map[msp.Endpoint]msp.Mode{msp.EndpointIMDS: msp.ModeEnforce},
			call{ep: msp.EndpointIMDS, uri: "/metadata/instance?api-version=2021-02-01", signed: true, extra: []msp.HeaderField{{Name: "Metadata", Value: "true"}}}, 200, true},
		{"imds without Metadata", nil,
			call{ep: msp.EndpointIMDS, uri: "/metadata/instance"}, 400, false},
		{"imds Metadata false", nil,
			call{ep: msp.EndpointIMDS, uri: "/metadata/instance", extra: []msp.HeaderField{{Name: "Metadata", Value: "false"}}}, 400, false},
		{"imds X-Forwarded-For", nil,
			call{ep: msp.EndpointIMDS, uri: "/metadata/instance", extra: []msp.HeaderField{{Name: "Metadata", Value: "true"}, {Name: "X-Forwarded-For", Value: "10.0.0.1"}}}, 400, false},
		{"imds token", nil,
			call{ep: msp.EndpointIMDS, uri: "/metadata/identity/oauth2/token?resource=x", extra: []msp.HeaderField{{Name: "Metadata", Value: "true"}}}, 200, false},
		{"hostga enforce unsigned", map[msp.Endpoint]msp.Mode{msp.EndpointHostGA: msp.ModeEnforce},
			call{ep: msp.EndpointHostGA, uri: "/health"}, 401, false},
		{"hostga follows wireserver without its own item", map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce},
			call{ep: msp.EndpointHostGA, uri: "/health"}, 401, false},
		{"hostga own item wins", map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce, msp.EndpointHostGA: msp.ModeAudit},
			call{ep: msp.EndpointHostGA, uri: "/health"}, 200, false},
		{"unknown path", nil,
			call{ep: msp.EndpointWireServer, uri: "/nope"}, 404, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHost(nil)
			defer h.Close()
			if tt.modes != nil {
				h.SetModes(tt.modes)
			}
			k := latch(t, h)
			h.ResetRequests()
			var sign msp.Key
			if tt.call.signed {
				sign = k
			}
			hdr := append([]msp.HeaderField{{Name: "Host", Value: "example"}}, tt.call.extra...)
			method := "GET"
			if strings.Contains(tt.call.uri, "telemetrydata") {
				method = "POST"
			}
			r := rawDo(t, h.Addr(tt.call.ep).String(), method, tt.call.uri, hdr, nil, sign)
			if r.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d: %s", r.StatusCode, tt.want, bodyString(t, r))
			}
			if r.Header.Get(msp.HeaderDate) == "" {
				t.Fatal("response lacks x-ms-azure-host-date")
			}
			reqs := h.Requests()
			if len(reqs) != 1 || reqs[0].SignatureValid != tt.valid || reqs[0].Endpoint != tt.call.ep || reqs[0].Status != tt.want {
				t.Fatalf("record = %+v", reqs)
			}
		})
	}
}

func TestResetKey(t *testing.T) {
	h := NewHost(nil)
	defer h.Close()
	h.SetModes(map[msp.Endpoint]msp.Mode{msp.EndpointWireServer: msp.ModeEnforce})
	old := latch(t, h)
	if inc := h.ResetKey(); inc != 2 {
		t.Fatalf("incarnation after reset = %d, want 2", inc)
	}
	st := getStatus(t, h)
	if st.KeyGUID != nil {
		t.Fatalf("keyGuid after reset = %q, want null until a new key is attested", *st.KeyGUID)
	}
	if st.KeyIncarnationID == nil || *st.KeyIncarnationID != 2 {
		t.Fatalf("keyIncarnationId = %v, want 2", st.KeyIncarnationID)
	}
	r := rawDo(t, h.WireServerAddr().String(), "GET", "/machine?comp=goalstate", []msp.HeaderField{{Name: "Host", Value: "x"}}, nil, old)
	if r.StatusCode != 401 {
		t.Fatalf("old key after reset: %d, want 401", r.StatusCode)
	}
	nk := latch(t, h)
	if nk.GUID == old.GUID || nk.Incarnation == nil || *nk.Incarnation != 2 {
		t.Fatalf("new key %v", nk)
	}
	if st := getStatus(t, h); st.KeyGUID == nil || *st.KeyGUID != nk.GUID {
		t.Fatal("status does not name the new key")
	}
}

func TestStatusForms(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *Host)
		want  string
	}{
		{"v2 disabled", func(h *Host) {},
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"keyIncarnationId":1,"requiredClaimsHeaderPairs":["isRoot"],"secureChannelEnabled":false,"version":"2.0"}`},
		{"v2 enforce", func(h *Host) {
			h.SetRules(msp.EndpointWireServer, &msp.AuthorizationItem{Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "w"})
			h.SetRules(msp.EndpointIMDS, &msp.AuthorizationItem{Mode: msp.ModeAudit, ID: "i"})
			h.SetEnabled(true)
		},
			`{"authorizationRules":{"imds":{"defaultAccess":"deny","mode":"audit","id":"i"},"wireserver":{"defaultAccess":"allow","mode":"enforce","id":"w"},"hostga":null},"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"keyIncarnationId":1,"requiredClaimsHeaderPairs":["isRoot"],"secureChannelEnabled":true,"version":"2.0"}`},
		{"v1 wireserver", func(h *Host) { h.SetStatusVersion("1.0"); h.SetV1State("Wireserver") },
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"requiredClaimsHeaderPairs":["isRoot"],"secureChannelState":"Wireserver","version":"1.0"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHost(nil)
			defer h.Close()
			tt.setup(h)
			if diff := cmp.Diff(tt.want, string(h.StatusJSON())); diff != "" {
				t.Fatalf("status JSON (-want +got):\n%s", diff)
			}
			r := rawDo(t, h.WireServerAddr().String(), "GET", "/secure-channel/status", agentHeaders("x", 0), nil, msp.Key{})
			if got := bodyString(t, r); got != tt.want {
				t.Fatalf("served %s", got)
			}
		})
	}
}

func TestV1ModesEnforceOrdinaryRequests(t *testing.T) {
	h := NewHost(&Options{StatusVersion: "1.0", V1State: "Wireserver"})
	defer h.Close()
	tests := []struct {
		ep   msp.Endpoint
		uri  string
		want int
	}{
		{msp.EndpointWireServer, "/machine?comp=goalstate", 401}, // enforce
		{msp.EndpointHostGA, "/health", 401},                     // follows WireServer
		{msp.EndpointIMDS, "/metadata/instance", 200},            // audit
	}
	for _, tt := range tests {
		r := rawDo(t, h.Addr(tt.ep).String(), "GET", tt.uri, []msp.HeaderField{{Name: "Host", Value: "x"}, {Name: "Metadata", Value: "true"}}, nil, msp.Key{})
		if r.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.ep, tt.uri, r.StatusCode, tt.want)
		}
	}
}

func TestFaults(t *testing.T) {
	client := &http.Client{Timeout: 300 * time.Millisecond}
	tests := []struct {
		fault     Fault
		wantErr   bool
		wantCode  int
		wantCType string
		wantBody  string
	}{
		{fault: Fault{Kind: FaultDown}, wantErr: true},
		{fault: Fault{Kind: FaultDrop}, wantErr: true},
		{fault: Fault{Kind: FaultSlow, Delay: time.Second}, wantErr: true},
		{fault: Fault{Kind: FaultStatus, Status: 503}, wantCode: 503},
		{fault: Fault{Kind: FaultStatus}, wantCode: 500},
		{fault: Fault{Kind: FaultMalformedJSON}, wantCode: 200, wantCType: "application/json; charset=utf-8", wantBody: `{"version": "2.0", "keyGuid": `},
		{fault: Fault{Kind: FaultWrongContentType}, wantCode: 200, wantCType: "text/xml; charset=utf-8"},
		{fault: Fault{Kind: FaultXMLBody}, wantCode: 200, wantCType: "application/xml; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.fault.Kind.String(), func(t *testing.T) {
			h := NewHost(nil)
			defer h.Close()
			f := tt.fault
			f.Endpoint = msp.EndpointWireServer
			f.Path = "/secure-channel/status"
			f.Count = 1
			h.SetFault(f)
			// A fault on another endpoint must not leak.
			h.SetFault(Fault{Kind: FaultStatus, Endpoint: msp.EndpointIMDS})
			url := h.WireServerURL() + "/secure-channel/status"
			resp, err := client.Get(url)
			if tt.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got %d, want a transport error", resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.wantCode {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantCode)
				}
				if tt.wantCType != "" && resp.Header.Get("Content-Type") != tt.wantCType {
					t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
				}
				if tt.wantBody != "" && string(b) != tt.wantBody {
					t.Fatalf("body %q", b)
				}
			}
			// Count 1: the next request is served normally.
			resp, err = (&http.Client{Timeout: 5 * time.Second}).Get(url)
			if err != nil {
				t.Fatalf("after the fault was used up: %v", err)
			}
			var v statusView
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || v.Version != "2.0" {
				t.Fatalf("after the fault: %d %v", resp.StatusCode, err)
			}
			// A slow request is recorded when its delay is over.
			deadline := time.Now().Add(5 * time.Second)
			for {
				var sawFault bool
				for _, r := range h.Requests() {
					if r.Fault == tt.fault.Kind && !r.SecureChannel {
						t.Errorf("a faulted key-status request is not marked SecureChannel: %+v", r)
					}
					sawFault = sawFault || r.Fault == tt.fault.Kind || (tt.fault.Kind == FaultDown && r.Dropped)
				}
				if sawFault {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the faulted request is not recorded")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestClearFaults(t *testing.T) {
	h := NewHost(nil)
	defer h.Close()
	h.SetFault(Fault{Kind: FaultStatus, Endpoint: msp.EndpointWireServer})
	for range 2 {
		r := rawDo(t, h.WireServerAddr().String(), "GET", "/secure-channel/status", agentHeaders("x", 0), nil, msp.Key{})
		if r.StatusCode != 500 {
			t.Fatalf("with a standing fault: %d", r.StatusCode)
		}
	}
	h.ClearFaults()
	r := rawDo(t, h.WireServerAddr().String(), "GET", "/secure-channel/status", agentHeaders("x", 0), nil, msp.Key{})
	if r.StatusCode != 200 {
		t.Fatalf("after ClearFaults: %d", r.StatusCode)
	}
}

func TestCallerListenersAndHandler(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not available: %v", err)
	}
	h := NewHost(&Options{Listeners: Listeners{IMDS: ln}})
	defer h.Close()
	if h.IMDSAddr().String() != ln.Addr().String() {
		t.Fatalf("IMDSAddr %s, want %s", h.IMDSAddr(), ln.Addr())
	}
	var gotHost, gotURI string
	h.SetHandler(msp.EndpointIMDS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotURI = r.Host, r.RequestURI
		w.WriteHeader(http.StatusTeapot)
	}))
	r := rawDo(t, ln.Addr().String(), "GET", "/x%2Fy?a=1", []msp.HeaderField{{Name: "Host", Value: "169.254.169.254"}, {Name: "Metadata", Value: "true"}}, nil, msp.Key{})
	if r.StatusCode != http.StatusTeapot || gotHost != "169.254.169.254" || gotURI != "/x%2Fy?a=1" {
		t.Fatalf("handler: %d host=%q uri=%q", r.StatusCode, gotHost, gotURI)
	}
}

func TestKeepAliveAndChunked(t *testing.T) {
	h := NewHost(nil)
	defer h.Close()
	c, err := net.Dial("tcp", h.WireServerAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := "POST /machine?comp=health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
		"GET /secure-channel/status HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{200, 200} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("response %d: %d", i, resp.StatusCode)
		}
	}
	reqs := h.Requests()
	if len(reqs) != 2 || string(reqs[0].Body) != "hello" {
		t.Fatalf("records %+v", reqs)
	}
}

func TestCloseWithOpenConnection(t *testing.T) {
	h := NewHost(nil)
	c, err := net.Dial("tcp", h.WireServerAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() { h.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on an idle connection")
	}
	if _, err := net.DialTimeout("tcp", h.WireServerAddr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after Close")
	}
}

func TestMalformedRequest(t *testing.T) {
	h := NewHost(nil)
	defer h.Close()
	c, err := net.Dial("tcp", h.WireServerAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GARBAGE\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 {
		t.Fatalf("malformed request line: %d", resp.StatusCode)
	}
}

func TestTelemetryRecordsAcceptedPosts(t *testing.T) {
	h := NewHost(nil)
	defer h.Close()
	h.SetFault(Fault{Kind: FaultStatus, Endpoint: msp.EndpointWireServer, Path: "/machine/", Status: 503, Count: 1})
	post := func(uri, body string) {
		hdr := []msp.HeaderField{{Name: "Host", Value: "168.63.129.16"}, {Name: "Content-Length", Value: strconv.Itoa(len(body))}}
		rawDo(t, h.WireServerAddr().String(), "POST", uri, hdr, []byte(body), msp.Key{}).Body.Close()
	}
	for _, body := range []string{"refused", "first", "second"} {
		post("/machine/?comp=telemetrydata", body)
	}
	post("/machine/?comp=health", "not telemetry")
	var got []string
	for _, r := range h.Telemetry() {
		got = append(got, string(r.Body))
	}
	if want := []string{"first", "second"}; !slices.Equal(got, want) {
		t.Errorf("Telemetry() bodies = %q, want %q (the refused post and other posts left out)", got, want)
	}
}
