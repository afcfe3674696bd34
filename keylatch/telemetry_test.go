package keylatch_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

func TestSendTelemetry(t *testing.T) {
	host := msptest.NewHost(nil)
	defer host.Close()
	key, err := msp.NewKey("11111111-2222-3333-4444-555555555555", strings.Repeat("a5", 32))
	if err != nil {
		t.Fatal(err)
	}
	host.LatchKey(key)
	signer, _ := msp.NewSigner(key)
	c := keylatch.NewClient(&keylatch.ClientOptions{Addr: host.WireServerAddr()})
	body := []byte(`<?xml version="1.0"?><TelemetryData version="1.0"></TelemetryData>`)

	for _, tt := range []struct {
		name   string
		signer *msp.Signer
		fault  int
		signed bool
		err    error
	}{
		{name: "signed with the latched key", signer: signer, signed: true},
		{name: "unsigned without a key, as upstream", signer: nil},
		{name: "host refuses", signer: signer, fault: 503, signed: true, err: keylatch.ErrHostResponse},
	} {
		t.Run(tt.name, func(t *testing.T) {
			host.ResetRequests()
			if tt.fault != 0 {
				host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Endpoint: msp.EndpointWireServer, Path: "/machine/", Status: tt.fault, Count: 1})
			}
			err := c.SendTelemetry(context.Background(), body, tt.signer)
			if !errors.Is(err, tt.err) {
				t.Fatalf("SendTelemetry = %v, want %v", err, tt.err)
			}
			reqs := host.RequestsTo("POST", "/machine/")
			if len(reqs) != 1 {
				t.Fatalf("host got %d posts", len(reqs))
			}
			r := reqs[0]
			if r.RawURI != keylatch.TelemetryPath || string(r.Body) != string(body) {
				t.Errorf("host got %s with body %q", r.RawURI, r.Body)
			}
			v, _ := r.Get("x-ms-version")
			ct, _ := r.Get("Content-Type")
			if v != "2012-11-30" || ct != "text/xml; charset=utf-8" {
				t.Errorf("x-ms-version %q, Content-Type %q: want upstream's", v, ct)
			}
			if r.Signed != tt.signed || (tt.signed && !r.SignatureValid) {
				t.Errorf("signed=%v valid=%v (%s), want signed=%v and valid", r.Signed, r.SignatureValid, r.SignatureError, tt.signed)
			}
			if got := len(host.Telemetry()); (tt.err == nil) != (got == 1) {
				t.Errorf("host.Telemetry() has %d posts", got)
			}
		})
	}
}
