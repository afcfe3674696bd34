package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

const (
	sub    = "00000000-0000-0000-0000-000000000001"
	rgPath = "/subscriptions/" + sub + "/resourceGroups/rg1/providers/Microsoft.Compute/"
	vmID   = rgPath + "virtualMachines/vm1"
	vmssID = rgPath + "virtualMachineScaleSets/ss1"
)

func env(t *testing.T) (*armtest.Server, newClientFunc) {
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
	return srv, func(s string) (*arm.Client, error) {
		if s != sub {
			t.Errorf("subscription %q", s)
		}
		return arm.NewClient(s, &fake.TokenCredential{}, &arm.ClientOptions{ClientOptions: srv.ClientOptions()})
	}
}

func runTool(t *testing.T, nc newClientFunc, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	fast := []string{"--poll-interval", "1ms", "--guest-interval", "1ms", "--timeout", "30s"}
	code := run(context.Background(), append(fast, args...), &out, &errb, nc)
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
