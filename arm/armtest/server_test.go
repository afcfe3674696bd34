package armtest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm/armtest"
)

const vm = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

// do sends a raw request the way any ARM client would.
func do(t *testing.T, srv *armtest.Server, method, path, body string, hdr map[string]string) reply {
	t.Helper()
	u := srv.URL + path
	if !strings.Contains(path, "?") {
		u += "?api-version=2025-04-01"
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := srv.ClientOptions().Transport.(*http.Client)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.body); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
	}
	return r
}

func errCode(r reply) string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestPatchRules(t *testing.T) {
	const ref = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/inVMAccessControlProfiles/p/versions/1"
	tests := []struct {
		name       string
		initial    string
		patch      string
		wantStatus int
		wantCode   string
		wantStored string
	}{
		{"mode and reference", ``, `{"wireServer":{"mode":"Audit","inVMAccessControlProfileReferenceId":"` + ref + `"}}`, 400, "BadRequest", `{}`},
		{"lowercase mode", ``, `{"imds":{"mode":"audit"}}`, 400, "BadRequest", `{}`},
		{"key decrease", `{"keyIncarnationId":3}`, `{"keyIncarnationId":2}`, 400, "BadRequest", `{"keyIncarnationId":3}`},
		{"key not an integer", ``, `{"keyIncarnationId":1.5}`, 400, "InvalidParameter", `{}`},
		{"bad reference", ``, `{"imds":{"inVMAccessControlProfileReferenceId":"/subscriptions/s1/resourceGroups/rg"}}`, 400, "InvalidParameter", `{}`},
		{"unknown reference", ``, `{"imds":{"inVMAccessControlProfileReferenceId":"` + ref + `"}}`, 404, "InVMAccessControlProfileNotFound", `{}`},
		{"same key is accepted", `{"keyIncarnationId":3}`, `{"keyIncarnationId":3}`, 200, "", `{"keyIncarnationId":3}`},
		{"null removes", `{"enabled":true,"imds":{"mode":"Audit","useLocalFileRules":true}}`, `{"imds":{"useLocalFileRules":null}}`, 200, "", `{"enabled":true,"imds":{"mode":"Audit"}}`},
		{"mode clears reference", `{"imds":{"inVMAccessControlProfileReferenceId":"` + ref + `"}}`, `{"imds":{"mode":"Enforce"}}`, 200, "", `{"imds":{"mode":"Enforce"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := armtest.NewServer(nil)
			defer srv.Close()
			srv.AddVirtualMachine(vm, armtest.VM{Location: "westus", OSType: "Linux", ProxyAgentSettings: tt.initial})
			r := do(t, srv, "PATCH", vm, `{"properties":{"securityProfile":{"proxyAgentSettings":`+tt.patch+`}}}`, nil)
			if r.status != tt.wantStatus || errCode(r) != tt.wantCode {
				t.Fatalf("got %d %q, want %d %q: %v", r.status, errCode(r), tt.wantStatus, tt.wantCode, r.body)
			}
			if r.status >= 400 && r.header.Get("x-ms-error-code") != tt.wantCode {
				t.Errorf("x-ms-error-code = %q", r.header.Get("x-ms-error-code"))
			}
			got := srv.ProxyAgentSettings(vm)
			if got == nil {
				got = []byte(`{}`)
			}
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal([]byte(tt.wantStored), &w)
			if d := cmp.Diff(w, g); d != "" {
				t.Errorf("stored (-want +got):\n%s", d)
			}
		})
	}
}

func TestETagsAndLROHeaders(t *testing.T) {
	srv := armtest.NewServer(&armtest.Options{LROPolls: 1})
	defer srv.Close()
	srv.AddVirtualMachine(vm, armtest.VM{Location: "westus", OSType: "Linux"})
	get := do(t, srv, "GET", vm, "", nil)
	etag, _ := get.body["etag"].(string)
	if get.status != 200 || etag == "" {
		t.Fatalf("GET = %d %v", get.status, get.body)
	}
	patch := `{"properties":{"securityProfile":{"proxyAgentSettings":{"enabled":true}}}}`
	if r := do(t, srv, "PATCH", vm, patch, map[string]string{"If-Match": `W/"nope"`}); r.status != 412 || errCode(r) != "PreconditionFailed" {
		t.Fatalf("stale If-Match = %d %q", r.status, errCode(r))
	}
	r := do(t, srv, "PATCH", vm, patch, map[string]string{"If-Match": etag})
	if r.status != 200 || r.body["etag"] == etag {
		t.Fatalf("PATCH = %d, etag %v (old %v)", r.status, r.body["etag"], etag)
	}
	if st := r.body["properties"].(map[string]any)["provisioningState"]; st != "Updating" {
		t.Errorf("provisioningState = %v", st)
	}
	op, err := url.Parse(r.header.Get("Azure-AsyncOperation"))
	if err != nil || !op.IsAbs() || "https://"+op.Host != srv.URL {
		t.Fatalf("Azure-AsyncOperation = %q", r.header.Get("Azure-AsyncOperation"))
	}
	var states []any
	for range 2 {
		s := do(t, srv, "GET", op.RequestURI(), "", nil)
		states = append(states, s.body["status"])
	}
	if d := cmp.Diff([]any{"InProgress", "Succeeded"}, states); d != "" {
		t.Errorf("operation states (-want +got):\n%s", d)
	}
	if st := do(t, srv, "GET", vm, "", nil).body["properties"].(map[string]any)["provisioningState"]; st != "Succeeded" {
		t.Errorf("provisioningState after the operation = %v", st)
	}
}

func TestProtocolErrors(t *testing.T) {
	srv := armtest.NewServer(nil)
	defer srv.Close()
	srv.AddVirtualMachine(vm, armtest.VM{Location: "westus", OSType: "Linux"})
	if r := do(t, srv, "GET", vm+"?x=1", "", nil); r.status != 400 || errCode(r) != "MissingApiVersionParameter" {
		t.Errorf("no api-version = %d %q", r.status, errCode(r))
	}
	if r := do(t, srv, "GET", vm, "", map[string]string{"Authorization": ""}); r.status != 401 {
		t.Errorf("no token = %d", r.status)
	}
	if r := do(t, srv, "GET", "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/none", "", nil); r.status != 404 || errCode(r) != "ResourceNotFound" {
		t.Errorf("missing VM = %d %q", r.status, errCode(r))
	}
	srv.Throttle(1, 1500*time.Millisecond)
	r := do(t, srv, "GET", vm, "", nil)
	if r.status != 429 || r.header.Get("Retry-After") != "2" || r.header.Get("Retry-After-Ms") != "1500" {
		t.Errorf("throttled = %d Retry-After %q / %q ms", r.status, r.header.Get("Retry-After"), r.header.Get("Retry-After-Ms"))
	}
	if r := do(t, srv, "GET", vm, "", nil); r.status != 200 {
		t.Errorf("after throttling = %d", r.status)
	}
}
