package fleet_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"

	"github.com/metadatasec/gpa/arm/armtest"
	"github.com/metadatasec/gpa/arm/fleet"
)

func newServer(t testing.TB) *armtest.Server {
	t.Helper()
	srv := armtest.NewServer(nil)
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t testing.TB, srv *armtest.Server) *fleet.Client {
	t.Helper()
	o := srv.ClientOptions()
	// Fifty workers on two idle connections would spend the test in TLS
	// handshakes.
	tr := o.Transport.(*http.Client).Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 100
	o.Transport = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections) // before the server closes
	c, err := fleet.NewClient(&fake.TokenCredential{}, &fleet.Options{
		ClientOptions:     o,
		LowRemainingPause: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// patches returns the proxyAgentSettings bodies of the PATCHes the server
// received, by path, and fails on any other shape of PATCH body.
func patches(t *testing.T, srv *armtest.Server) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, r := range srv.Requests() {
		if r.Method != "PATCH" {
			continue
		}
		var body map[string]any
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("PATCH %s: %v", r.Path, err)
		}
		props, _ := body["properties"].(map[string]any)
		if len(body) != 1 || props == nil || len(props) != 1 {
			t.Fatalf("PATCH %s carries more than properties.securityProfile: %s", r.Path, r.Body)
		}
		if vmp, ok := props["virtualMachineProfile"].(map[string]any); ok {
			props = vmp
			if len(props) != 1 {
				t.Fatalf("PATCH %s: model carries more than securityProfile: %s", r.Path, r.Body)
			}
		}
		sp, _ := props["securityProfile"].(map[string]any)
		pas, _ := sp["proxyAgentSettings"].(map[string]any)
		if len(sp) != 1 || pas == nil {
			t.Fatalf("PATCH %s: securityProfile carries more than proxyAgentSettings: %s", r.Path, r.Body)
		}
		if r.Header.Get("If-Match") == "" {
			t.Errorf("PATCH %s without If-Match", r.Path)
		}
		out[r.Path] = append(out[r.Path], pas)
	}
	return out
}

// writtenOnce fails for every resource the fake accepted more than one
// write for.
func writtenOnce(t *testing.T, srv *armtest.Server) {
	t.Helper()
	for id, n := range srv.Writes() {
		if n != 1 {
			t.Errorf("%s written %d times", id, n)
		}
	}
}
