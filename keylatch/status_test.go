package keylatch

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func TestParseKeyStatus(t *testing.T) {
	type want struct {
		State          string
		WS, IMDS, HGA  msp.Mode
		KeyGUID        string
		HasIncarnation bool
	}
	tests := []struct {
		name string
		in   string
		want *want // nil: invalid
	}{
		{"upstream v1 vector",
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"requiredClaimsHeaderPairs":null,"secureChannelState":"Wireserver","version":"1.0"}`,
			&want{State: "wireserver", WS: msp.ModeEnforce, IMDS: msp.ModeAudit, HGA: msp.ModeEnforce}},
		{"v1 disabled",
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"secureChannelState":"Disabled","version":"1.0"}`,
			&want{State: "disabled"}},
		{"v1 wireserverandimds mixed case",
			`{"authorizationScheme":"x","keyDeliveryMethod":"vtpm","keyGuid":"g","secureChannelState":"WireServerAndIMDS","version":"1.0"}`,
			&want{State: "wireserverandimds", WS: msp.ModeEnforce, IMDS: msp.ModeEnforce, HGA: msp.ModeEnforce, KeyGUID: "g"}},
		{"upstream v2 disabled vector",
			`{"authorizationRules":null,"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"keyIncarnationId":null,"requiredClaimsHeaderPairs":[],"secureChannelEnabled":false,"version":"2.0"}`,
			&want{State: "disabled"}},
		{"v2 enabled without rules is disabled",
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","secureChannelEnabled":true,"version":"2.0"}`,
			&want{State: "disabled"}},
		{"v2 enforce, hostga follows wireserver",
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":"k","keyIncarnationId":4,"secureChannelEnabled":true,"version":"2.0",
			  "authorizationRules":{"wireserver":{"defaultAccess":"allow","mode":"Enforce","id":"w"},"imds":{"defaultAccess":"deny","mode":"audit","id":"i"},"hostga":{"defaultAccess":"deny","mode":"disabled","id":"h"}}}`,
			&want{State: "WireServer Enforce -  IMDS Audit - HostGA Enforce", WS: msp.ModeEnforce, IMDS: msp.ModeAudit, HGA: msp.ModeEnforce, KeyGUID: "k", HasIncarnation: true}},
		{"v2 all disabled is still not 'disabled'",
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","secureChannelEnabled":true,"version":"2.0","authorizationRules":{}}`,
			&want{State: "WireServer Disabled -  IMDS Disabled - HostGA Disabled"}},
		{"v2 unknown mode is disabled",
			`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","secureChannelEnabled":true,"version":"2.0","authorizationRules":{"wireserver":{"defaultAccess":"allow","mode":"strict","id":"w"}}}`,
			&want{State: "WireServer Disabled -  IMDS Disabled - HostGA Disabled"}},
		{"neither field", `{"authorizationScheme":"a","keyDeliveryMethod":"http","version":"2.0"}`, nil},
		{"v1 audit state rejected", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelState":"Audit","version":"1.0"}`, nil},
		{"v1 without state", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelEnabled":true,"version":"1.0"}`, nil},
		{"v2 without enabled", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelState":"Wireserver","version":"2.0"}`, nil},
		{"missing version", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelEnabled":true}`, nil},
		{"missing scheme", `{"keyDeliveryMethod":"http","secureChannelEnabled":true,"version":"2.0"}`, nil},
		{"truncated", `{"authorizationScheme":"a","keyDeliv`, nil},
		{"trailing data", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelEnabled":false,"version":"2.0"} {}`, nil},
		{"stray bracket", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelEnabled":false,"version":"2.0"}]`, nil},
		{"wrong type", `{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelEnabled":"yes","version":"2.0"}`, nil},
		{"empty", ``, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseKeyStatus([]byte(tt.in))
			if tt.want == nil {
				if !errors.Is(err, ErrInvalidStatus) {
					t.Fatalf("err = %v, want ErrInvalidStatus", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{State: st.StateString(), WS: st.Mode(msp.EndpointWireServer), IMDS: st.Mode(msp.EndpointIMDS),
				HGA: st.Mode(msp.EndpointHostGA), HasIncarnation: st.KeyIncarnationID != nil}
			if st.KeyGUID != nil {
				got.KeyGUID = *st.KeyGUID
			}
			if diff := cmp.Diff(*tt.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeyStatusString(t *testing.T) {
	st, err := ParseKeyStatus([]byte(`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"secureChannelState":"Wireserver","version":"1.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := "authorizationScheme: Azure-HMAC-SHA256, keyDeliveryMethod: http, keyGuid: None, secureChannelState: Wireserver, version: 1.0, WireServerMode: enforce, IMDSMode: audit"
	if got := st.String(); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestParseKeyStatusXML(t *testing.T) {
	in := `<?xml version="1.0"?><KeyStatus><authorizationScheme>Azure-HMAC-SHA256</authorizationScheme><keyDeliveryMethod>http</keyDeliveryMethod>` +
		`<keyGuid>g1</keyGuid><secureChannelEnabled>true</secureChannelEnabled><version>2.0</version>` +
		`<authorizationRules><wireserver><defaultAccess>allow</defaultAccess><mode>audit</mode><id>w</id></wireserver></authorizationRules></KeyStatus>`
	st, err := ParseKeyStatusXML([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.StateString(); got != "WireServer Audit -  IMDS Disabled - HostGA Audit" || *st.KeyGUID != "g1" {
		t.Fatalf("state %q", got)
	}
	if _, err := ParseKeyStatusXML([]byte(`<Error><Code>x</Code></Error>`)); !errors.Is(err, ErrInvalidStatus) {
		t.Fatalf("XML error document: %v", err)
	}
}

func TestDecodeBody(t *testing.T) {
	utf16le := func(s string) []byte {
		var b []byte
		for _, r := range s {
			b = append(b, byte(r), byte(r>>8))
		}
		return b
	}
	tests := []struct {
		name, ctype string
		body        []byte
		want        string
		xml, err    bool
	}{
		{"json", "application/json; charset=utf-8", []byte(`{"a":1}`), `{"a":1}`, false, false},
		{"xml", "text/xml", []byte(`<a/>`), `<a/>`, true, false},
		{"utf-16", "application/json; charset=utf-16", utf16le(`{"a":1}`), `{"a":1}`, false, false},
		{"utf-16 with BOM", "application/json; charset=UTF-16", append([]byte{0xFF, 0xFE}, utf16le(`{}`)...), `{}`, false, false},
		{"odd utf-16", "application/json; charset=utf-16", []byte{1, 2, 3}, "", false, true},
		{"utf-32", "application/json; charset=utf-32", []byte(`{}`), "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Content-Type", tt.ctype)
			got, isXML, err := decodeBody(&rawResponse{status: 200, header: h, body: tt.body})
			if (err != nil) != tt.err || isXML != tt.xml || (err == nil && string(got) != tt.want) {
				t.Fatalf("got %q xml=%v err=%v", got, isXML, err)
			}
		})
	}
}

func TestHostClockSync(t *testing.T) {
	guest := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := guest
	c := NewClient(&ClientOptions{Now: func() time.Time { return now }})
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	if _, ok := c.ClockOffset(); ok {
		t.Fatal("synced before any response")
	}
	// Unparseable custom header: no fallback to Date.
	c.maybeSync(hdr(msp.HeaderDate, "yesterday", "Date", "Thu, 01 Jan 2026 01:00:00 GMT"))
	if _, ok := c.ClockOffset(); ok {
		t.Fatal("fell back to Date although x-ms-azure-host-date was present")
	}
	// Date alone is used.
	c.maybeSync(hdr("Date", "Thu, 01 Jan 2026 00:00:30 GMT"))
	if off, ok := c.ClockOffset(); !ok || off != 30*time.Second {
		t.Fatalf("offset %v %v, want 30s", off, ok)
	}
	if got := c.Now(); !got.Equal(guest.Add(30 * time.Second)) {
		t.Fatalf("Now %v", got)
	}
	// Within 15 minutes no new sync happens.
	now = now.Add(10 * time.Minute)
	c.maybeSync(hdr(msp.HeaderDate, msp.FormatDate(now.Add(time.Hour))))
	if off, _ := c.ClockOffset(); off != 30*time.Second {
		t.Fatalf("resynced too early: %v", off)
	}
	// After 15 minutes the custom header wins over Date.
	now = now.Add(6 * time.Minute)
	c.maybeSync(hdr(msp.HeaderDate, msp.FormatDate(now.Add(time.Hour)), "Date", msp.FormatDate(now)))
	if off, _ := c.ClockOffset(); off != time.Hour {
		t.Fatalf("offset %v, want 1h", off)
	}
}
