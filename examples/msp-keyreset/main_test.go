package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm/armtest"
)

const (
	sub    = "00000000-0000-0000-0000-000000000001"
	rgPath = "/subscriptions/" + sub + "/resourceGroups/rg1/providers/Microsoft.Compute/"
	vmID   = rgPath + "virtualMachines/vm1"
	vmssID = rgPath + "virtualMachineScaleSets/ss1"
)

func env(t *testing.T) (*armtest.Server, deps) {
	t.Helper()
	srv := armtest.NewServer(&armtest.Options{GuestAutoLatch: true, LROPolls: 2})
	t.Cleanup(srv.Close)
	srv.AddVirtualMachine(vmID, armtest.VM{Location: "eastus", OSType: "Linux",
		ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":4,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"}}`})
	srv.AddScaleSet(vmssID, armtest.ScaleSet{Location: "eastus", OSType: "Linux", UpgradeMode: "Manual",
		ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":1,"wireServer":{"mode":"Enforce"}}`})
	for _, inst := range []string{"0", "1", "2"} {
		srv.AddScaleSetInstance(vmssID, inst, armtest.VM{Location: "eastus", OSType: "Linux",
			ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":1,"wireServer":{"mode":"Enforce"}}`})
	}
	return srv, deps{
		newCredential: func(cloud.Configuration) (azcore.TokenCredential, error) { return &fake.TokenCredential{}, nil },
		// The endpoint comes from the environment variable, as a test
		// harness would set it; TestEndpointOverride covers the flag.
		getenv: func(k string) string {
			if k == endpointEnv {
				return srv.URL
			}
			return ""
		},
		transport: srv.ClientOptions().Transport,
	}
}

func runTool(t *testing.T, d deps, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	fast := []string{"--poll-interval", "1ms", "--guest-interval", "1ms", "--timeout", "30s"}
	code := run(context.Background(), append(fast, args...), &out, &errb, d)
	return code, out.String(), errb.String()
}

func writes(srv *armtest.Server) []string {
	var w []string
	for _, r := range srv.Requests() {
		if r.Method == "PATCH" || r.Method == "PUT" {
			w = append(w, r.Method+" "+r.Path)
		}
	}
	return w
}

func TestResetVMAndWaitForGuest(t *testing.T) {
	srv, nc := env(t)
	code, out, errOut := runTool(t, nc, "--vm", vmID, "--wait-guest")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"keyIncarnationId 4 -> 5", "update done", "guest latched incarnation 5"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := srv.KeyIncarnationID(vmID); got != 5 {
		t.Errorf("keyIncarnationId = %d, want 5", got)
	}
	for _, r := range srv.Requests() {
		if r.Method == "PATCH" && r.Header.Get("If-Match") == "" {
			t.Error("PATCH without If-Match")
		}
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	srv, nc := env(t)
	code, out, errOut := runTool(t, nc, "--vm", vmID, "--dry-run")
	if code != exitOK || !strings.Contains(out, "keyIncarnationId is 4") || !strings.Contains(out, `"keyIncarnationId":5`) {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if w := writes(srv); len(w) != 0 || srv.KeyIncarnationID(vmID) != 4 {
		t.Errorf("dry run wrote %v", w)
	}
}

// Another writer changes the VM between our read and our write: the 412 is
// retried with a fresh read and the value still goes up by exactly one per
// reset.
func TestResetRacesWithAnotherWriter(t *testing.T) {
	srv, nc := env(t)
	srv.FailNextRequest(armtest.ServiceError{Method: "PATCH", Status: 412, Code: "PreconditionFailed", Message: "etag mismatch"})
	code, out, errOut := runTool(t, nc, "--vm", vmID)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if got := len(writes(srv)); got != 2 {
		t.Errorf("%d writes, want 2 (one refused, one retried)", got)
	}
	if got := srv.KeyIncarnationID(vmID); got != 5 {
		t.Errorf("keyIncarnationId = %d, want 5", got)
	}
	// Two tools at once: both succeed, with distinct values.
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o, e bytes.Buffer
			if c := run(context.Background(), []string{"--poll-interval", "1ms", "--vm", vmID}, &o, &e, nc); c != exitOK {
				t.Errorf("concurrent reset %d: exit %d %s", i, c, e.String())
			}
			outs[i] = o.String()
		}()
	}
	wg.Wait()
	if got := srv.KeyIncarnationID(vmID); got != 7 {
		t.Errorf("after two concurrent resets keyIncarnationId = %d, want 7", got)
	}
	if outs[0] == outs[1] {
		t.Errorf("both resets reported the same change: %s", outs[0])
	}
}

func TestFailedOperationPrintsAction(t *testing.T) {
	srv, nc := env(t)
	srv.SetFeatureRegistered(sub, false)
	code, _, errOut := runTool(t, nc, "--vm", vmID)
	if code != exitError || !strings.Contains(errOut, "SubscriptionNotEnabledForProxyAgentFeature") || !strings.Contains(errOut, "action:") {
		t.Errorf("exit %d\n%s", code, errOut)
	}
	srv.SetFeatureRegistered(sub, true)
	srv.FailNextOperation("InternalServerError", "the update failed")
	code, _, errOut = runTool(t, nc, "--vm", vmID)
	if code != exitError || !strings.Contains(errOut, "the update failed") {
		t.Errorf("failed LRO: exit %d\n%s", code, errOut)
	}
}

func TestResetScaleSetInstances(t *testing.T) {
	srv, nc := env(t)
	code, out, errOut := runTool(t, nc, "--vmss", vmssID, "--instance", "1", "--wait-guest")
	if code != exitOK || !strings.Contains(out, "ss1/1: keyIncarnationId 1 -> 2") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if srv.KeyIncarnationID(vmssID+"/virtualMachines/1") != 2 || srv.KeyIncarnationID(vmssID+"/virtualMachines/0") != 1 {
		t.Error("wrong instance changed")
	}
	code, out, errOut = runTool(t, nc, "--vmss", vmssID, "--all-instances")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for inst, want := range map[string]int32{"0": 2, "1": 3, "2": 2} {
		if got := srv.KeyIncarnationID(vmssID + "/virtualMachines/" + inst); got != want {
			t.Errorf("instance %s = %d, want %d", inst, got, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	_, nc := env(t)
	for _, args := range [][]string{
		{}, {"--vm", vmID, "--vmss", vmssID}, {"--vmss", vmssID}, {"--vmss", vmssID, "--instance", "1", "--all-instances"},
		{"--vm", vmID, "--instance", "1"}, {"--vm", "not-an-id"}, {"--vm", vmssID}, {"--vmss", vmID, "--instance", "0"},
	} {
		if code, _, _ := runTool(t, nc, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestFlagsCheckedBeforeAnyRequest: a bad flag is a usage error before any
// credential is asked for or any request sent (--poll-interval 200ms used
// to send the reset, then azcore refused the interval).
func TestFlagsCheckedBeforeAnyRequest(t *testing.T) {
	for _, args := range [][]string{
		{"--vm", vmID, "--poll-interval", "200ms"},
		{"--vm", vmID, "--timeout", "0s"},
		{"--vm", vmID, "--guest-interval", "0s", "--wait-guest"},
		{"--vm", vmID, "--cloud", "AzureMars"},
		{"--vm", vmID, "--arm-endpoint", "http://example.com"},
		{"--vm", vmID, "--arm-endpoint", "not a url"},
		{"--vm", vmID, "--key-incarnation-id", "-1"},
		{"--vm", vmID, "--key-incarnation-id", "4294967296"},
		{"--vmss", vmssID, "--instance", "abc"},
		{"--vm", vmID, "extra"},
	} {
		srv, d := env(t)
		asked := false
		d.newCredential = func(cloud.Configuration) (azcore.TokenCredential, error) {
			asked = true
			return &fake.TokenCredential{}, nil
		}
		d.minPoll = time.Second
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb, d)
		if code != exitUsage || asked || len(srv.Requests()) != 0 {
			t.Errorf("%v: exit %d, credential asked %v, %d requests; want a usage error first\n%s", args, code, asked, len(srv.Requests()), errb.String())
		}
	}
}

// TestKeyIncarnationMustGoUp is the guide's "keyIncarnationId can only be
// incremented": a value equal to the current one is refused like a lower
// one, before any write, with the action printed once.
func TestKeyIncarnationMustGoUp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		key  int32 // stored afterwards
	}{
		{"equal to the current one", []string{"--key-incarnation-id", "4"}, exitError, 4},
		{"lower than the current one", []string{"--key-incarnation-id", "3"}, exitError, 4},
		{"equal in a dry run", []string{"--key-incarnation-id", "4", "--dry-run"}, exitError, 4},
		{"higher", []string{"--key-incarnation-id", "9"}, exitOK, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, d := env(t)
			code, out, errOut := runTool(t, d, append([]string{"--vm", vmID}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tt.code, out, errOut)
			}
			if got := srv.KeyIncarnationID(vmID); got != tt.key {
				t.Errorf("keyIncarnationId = %d, want %d", got, tt.key)
			}
			if tt.code == exitOK {
				if !strings.Contains(out, "keyIncarnationId 4 -> 9") {
					t.Errorf("output:\n%s", out)
				}
				return
			}
			if w := writes(srv); len(w) != 0 {
				t.Errorf("refused reset wrote %v", w)
			}
			if !strings.Contains(errOut, "keyIncarnationId") {
				t.Errorf("stderr does not say why:\n%s", errOut)
			}
		})
	}
}

// TestActionPrintedOnce: the guide's action for an error appears on one
// line of its own, not also inside the error line.
func TestActionPrintedOnce(t *testing.T) {
	srv, d := env(t)
	srv.SetFeatureRegistered(sub, false)
	code, _, errOut := runTool(t, d, "--vm", vmID)
	if code != exitError {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if n := strings.Count(errOut, "az feature register"); n != 1 {
		t.Errorf("action printed %d times:\n%s", n, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "msp-keyreset: ") || !strings.HasPrefix(lines[1], "action: ") {
		t.Errorf("want the error line then the action line:\n%s", errOut)
	}
}

// TestHelp: -h, --help and help print the synopsis and examples on stdout
// and exit 0.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "help"} {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{arg}, &out, &errb, deps{})
		if code != exitOK || errb.Len() != 0 {
			t.Errorf("%s: exit %d, stderr %q", arg, code, errb.String())
		}
		for _, want := range []string{"usage: msp-keyreset --vm ID", "Examples:", "--cloud", "--arm-endpoint", endpointEnv, "az login"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: help lacks %q", arg, want)
			}
		}
	}
}

// TestNoCredential: without a credential the command says in one line how
// to provide one, then gives azidentity's detail, and sends nothing.
func TestNoCredential(t *testing.T) {
	srv, d := env(t)
	detail := "DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tEnvironmentCredential: missing environment variable AZURE_TENANT_ID"
	d.newCredential = func(cloud.Configuration) (azcore.TokenCredential, error) {
		c := &fake.TokenCredential{}
		c.SetError(errors.New(detail))
		return c, nil
	}
	code, _, errOut := runTool(t, d, "--vm", vmID)
	if code != exitError {
		t.Fatalf("exit %d", code)
	}
	first, rest, _ := strings.Cut(errOut, "\n")
	for _, want := range []string{"az login", "AZURE_CLIENT_ID", "managed identity"} {
		if !strings.Contains(first, want) {
			t.Errorf("first line %q lacks %q", first, want)
		}
	}
	if !strings.HasPrefix(rest, "DefaultAzureCredential: failed to acquire a token.") {
		t.Errorf("the azidentity detail does not follow:\n%s", errOut)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d requests sent without a credential", n)
	}
}

// TestCloudSelection: --cloud picks azcore's cloud configuration, for ARM
// and for the credential; an endpoint override changes only the ARM
// endpoint of a copy.
func TestCloudSelection(t *testing.T) {
	tests := []struct {
		args          []string
		endpoint, aud string
	}{
		{nil, "https://management.azure.com", "https://management.core.windows.net/"},
		{[]string{"--cloud", "AzureChina"}, "https://management.chinacloudapi.cn", "https://management.core.chinacloudapi.cn/"},
		{[]string{"--cloud", "azureusgovernment"}, "https://management.usgovcloudapi.net", "https://management.core.usgovcloudapi.net/"},
		{[]string{"--cloud", "AzureChina", "--arm-endpoint", "https://127.0.0.1:8443/"}, "https://127.0.0.1:8443", "https://management.core.chinacloudapi.cn/"},
		{[]string{"--arm-endpoint", "http://[::1]:8080"}, "http://[::1]:8080", "https://management.core.windows.net/"},
	}
	for _, tt := range tests {
		var errb bytes.Buffer
		_, rid, c, code := parse(append([]string{"--vm", vmID}, tt.args...), io.Discard, &errb, deps{getenv: func(string) string { return "" }, minPoll: time.Second})
		if rid == nil {
			t.Errorf("%v: exit %d %s", tt.args, code, errb.String())
			continue
		}
		rm := c.Services[cloud.ResourceManager]
		if d := cmp.Diff([]string{tt.endpoint, tt.aud}, []string{rm.Endpoint, rm.Audience}); d != "" {
			t.Errorf("%v (-want +got):\n%s", tt.args, d)
		}
	}
	if got := cloud.AzureChina.Services[cloud.ResourceManager].Endpoint; got != "https://management.chinacloudapi.cn" {
		t.Errorf("the override changed azcore's global AzureChina: %q", got)
	}
}

// TestEndpointOverride: --arm-endpoint takes precedence over the
// environment variable.
func TestEndpointOverride(t *testing.T) {
	srv, d := env(t)
	d.getenv = func(string) string { return "https://127.0.0.1:1" }
	code, out, errOut := runTool(t, d, "--vm", vmID, "--arm-endpoint", srv.URL)
	if code != exitOK || srv.KeyIncarnationID(vmID) != 5 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}
