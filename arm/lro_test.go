package arm_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

func opPolls(srv *armtest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Method == http.MethodGet && strings.Contains(r.Path, "/operations/") {
			n++
		}
	}
	return n
}

func TestLROSeveralPolls(t *testing.T) {
	srv := newServer(t, &armtest.Options{LROPolls: 4})
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
	c := newClient(t, srv, nil)
	p, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{Enabled: ptr(true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Done() {
		t.Fatal("poller done before polling")
	}
	res, err := p.PollUntilDone(ctx(t), fast)
	if err != nil {
		t.Fatal(err)
	}
	// Four InProgress answers, then the terminal one.
	if n := opPolls(srv); n != 5 {
		t.Errorf("%d operation polls, want 5", n)
	}
	if val(res.Properties.ProvisioningState) != "Succeeded" || res.ProxyAgentSettings() == nil || !*res.ProxyAgentSettings().Enabled {
		t.Errorf("result = %+v", res.Properties)
	}
	// The final result is fetched from the resource itself.
	reqs := srv.Requests()
	if last := reqs[len(reqs)-1]; last.Method != http.MethodGet || last.Path != vmID("vm1") {
		t.Errorf("last request = %s %s", last.Method, last.Path)
	}
}

func TestLROFailed(t *testing.T) {
	srv := newServer(t, &armtest.Options{LROPolls: 2})
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
	srv.FailNextOperation("SubscriptionNotEnabledForProxyAgentFeature", "The subscription is not registered for the feature.")
	c := newClient(t, srv, nil)
	p, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{Enabled: ptr(true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.PollUntilDone(ctx(t), fast)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.ErrorCode != "SubscriptionNotEnabledForProxyAgentFeature" {
		t.Fatalf("err = %v, want the operation's ARM error", err)
	}
	var ae *arm.Error
	if !errors.Is(err, arm.ErrFeatureNotRegistered) || !errors.As(err, &ae) || !strings.Contains(ae.Action, "az feature register") {
		t.Errorf("PollUntilDone = %v, want the typed error", err)
	}
	vm, err := c.GetVirtualMachine(ctx(t), rg, "vm1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if val(vm.Properties.ProvisioningState) != "Failed" {
		t.Errorf("provisioningState = %q", val(vm.Properties.ProvisioningState))
	}
}

func TestLROResume(t *testing.T) {
	srv := newServer(t, &armtest.Options{LROPolls: 3})
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
	c := newClient(t, srv, nil)
	p, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{Enabled: ptr(true), IMDS: arm.InlineMode(arm.ModeAudit)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Poll(ctx(t)); err != nil {
		t.Fatal(err)
	}
	tok, err := p.ResumeToken()
	if err != nil {
		t.Fatal(err)
	}
	// A new process: another client, the token, and arguments that must be
	// ignored.
	srv.ResetRequests()
	c2 := newClient(t, srv, nil)
	p2, err := c2.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{}, &arm.ClientBeginUpdateVirtualMachineSettingsOptions{ResumeToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p2.PollUntilDone(ctx(t), fast)
	if err != nil {
		t.Fatal(err)
	}
	if val(res.Properties.ProvisioningState) != "Succeeded" {
		t.Errorf("provisioningState = %q", val(res.Properties.ProvisioningState))
	}
	if len(writes(srv)) != 0 {
		t.Error("resuming sent a write")
	}
	if n := opPolls(srv); n != 3 {
		t.Errorf("resumed poller polled %d times, want 3", n)
	}
}

func TestScaleSetManualUpgrade(t *testing.T) {
	srv := newServer(t, nil)
	ss := vmssID("ss1")
	srv.AddScaleSet(ss, armtest.ScaleSet{Location: region, OSType: "Linux", UpgradeMode: "Manual"})
	for _, id := range []string{"0", "1"} {
		srv.AddScaleSetInstance(ss, id, armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"keyIncarnationId":4}`})
	}
	c := newClient(t, srv, nil)

	p, err := c.BeginUpdateScaleSetSettings(ctx(t), rg, "ss1", arm.ProxyAgentSettings{Enabled: ptr(true), WireServer: arm.InlineMode(arm.ModeAudit)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.PollUntilDone(ctx(t), fast)
	if err != nil {
		t.Fatal(err)
	}
	w := writes(srv)
	if len(w) != 1 || w[0].Method != http.MethodPatch || w[0].Path != ss {
		t.Fatalf("writes = %+v", w)
	}
	jsonEqual(t, "body", w[0].Body, `{"properties":{"virtualMachineProfile":{"securityProfile":{"proxyAgentSettings":{"enabled":true,"wireServer":{"mode":"Audit"}}}}}}`)
	if !res.NeedsManualUpgrade() {
		t.Fatal("NeedsManualUpgrade = false for a Manual scale set")
	}
	inst, err := c.GetScaleSetInstance(ctx(t), rg, "ss1", "0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Properties.LatestModelApplied == nil || *inst.Properties.LatestModelApplied {
		t.Fatalf("instance has the latest model before the upgrade")
	}

	srv.ResetRequests()
	up, err := c.BeginManualUpgrade(ctx(t), rg, "ss1", []string{"0", "1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.PollUntilDone(ctx(t), fast); err != nil {
		t.Fatal(err)
	}
	w = writes(srv)
	if len(w) != 1 || w[0].Method != http.MethodPost || w[0].Path != ss+"/manualupgrade" || w[0].APIVersion() != arm.DefaultComputeAPIVersion {
		t.Fatalf("writes = %+v", w)
	}
	jsonEqual(t, "body", w[0].Body, `{"instanceIds":["0","1"]}`)
	for _, id := range []string{"0", "1"} {
		// The model arrived; the per-instance key stayed.
		jsonEqual(t, "instance "+id, srv.ProxyAgentSettings(ss+"/virtualMachines/"+id), `{"enabled":true,"wireServer":{"mode":"Audit"},"keyIncarnationId":4}`)
	}
	if _, err := c.BeginManualUpgrade(ctx(t), rg, "ss1", nil, nil); !errors.Is(err, arm.ErrInvalidRequest) {
		t.Errorf("upgrade of no instances = %v", err)
	}
}

func TestScaleSetKeyIsPerInstance(t *testing.T) {
	srv := newServer(t, nil)
	srv.AddScaleSet(vmssID("ss1"), armtest.ScaleSet{Location: region, OSType: "Linux", UpgradeMode: "Automatic", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":3}`})
	c := newClient(t, srv, nil)
	_, err := c.BeginUpdateScaleSetSettings(ctx(t), rg, "ss1", arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](2)}, nil)
	if !errors.Is(err, arm.ErrKeyIncarnationNotIncreasing) {
		t.Fatalf("err = %v", err)
	}
	var ae *arm.Error
	if !errors.As(err, &ae) || ae.Target != "virtualMachineProfile.securityProfile.proxyAgentSettings.keyIncarnationId" {
		t.Errorf("Target = %q", ae.Target)
	}
	if d := cmp.Diff(0, len(writes(srv))); d != "" {
		t.Error(d)
	}
}

func TestListScaleSetInstances(t *testing.T) {
	srv := newServer(t, &armtest.Options{PageSize: 2})
	ss := vmssID("ss1")
	srv.AddScaleSet(ss, armtest.ScaleSet{Location: region, OSType: "Linux", UpgradeMode: "Manual"})
	for _, id := range []string{"0", "1", "4"} {
		srv.AddScaleSetInstance(ss, id, armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":` + id + `}`})
	}
	c := newClient(t, srv, nil)
	var ids []string
	var keys []int32
	pager := c.NewListScaleSetInstancesPager(rg, "ss1", nil)
	for pager.More() {
		page, err := pager.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, inst := range page.Value {
			ids = append(ids, inst.InstanceID)
			keys = append(keys, *inst.ProxyAgentSettings().KeyIncarnationID)
		}
	}
	if d := cmp.Diff([]string{"0", "1", "4"}, ids); d != "" {
		t.Errorf("ids (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int32{0, 1, 4}, keys); d != "" {
		t.Errorf("keys (-want +got):\n%s", d)
	}
	var paths []string
	for _, r := range srv.Requests() {
		paths = append(paths, r.Method+" "+r.Path+" "+r.APIVersion())
	}
	want := []string{"GET " + ss + "/virtualMachines " + arm.DefaultComputeAPIVersion, "GET " + ss + "/virtualMachines " + arm.DefaultComputeAPIVersion}
	if d := cmp.Diff(want, paths); d != "" {
		t.Errorf("requests (-want +got):\n%s", d)
	}
}

// TestPollUntilDoneTypedError: an operation that fails after it was
// accepted fails PollUntilDone with the same typed error Begin* would
// return, also from a resumed poller, and leaves errors outside the guide
// as azcore made them.
func TestPollUntilDoneTypedError(t *testing.T) {
	tests := []struct {
		name, code, message string
		kind                error
	}{
		{"BadRequest profile is for host endpoint WireServer while referred by IMDS", "BadRequest",
			"Current Gallery InVMAccessControlProfile Version " + versionID("wsLinux", "1.0.0") + " is for host endpoint WireServer, while current referred by IMDS.",
			arm.ErrProfileEndpointMismatch},
		{"InVMAccessControlProfileNotFound failed to prepare the metadata", "InVMAccessControlProfileNotFound",
			"Failed to prepare the InVMAccessControlProfile 'p' metadata for one or more resources due to an error: 'x'.",
			arm.ErrProfileNotFound},
		{"unknown code passes through", "AllocationFailed", "Allocation failed.", nil},
	}
	for _, tt := range tests {
		for _, resume := range []bool{false, true} {
			name := tt.name
			if resume {
				name += "/resumed"
			}
			t.Run(name, func(t *testing.T) {
				srv := newServer(t, &armtest.Options{LROPolls: 2})
				srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
				srv.FailNextOperation(tt.code, tt.message)
				c := newClient(t, srv, nil)
				p, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{Enabled: ptr(true)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resume {
					tok, err := p.ResumeToken()
					if err != nil {
						t.Fatal(err)
					}
					p, err = c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{},
						&arm.ClientBeginUpdateVirtualMachineSettingsOptions{ResumeToken: tok})
					if err != nil {
						t.Fatal(err)
					}
				}
				_, err = p.PollUntilDone(ctx(t), fast)
				var re *azcore.ResponseError
				if !errors.As(err, &re) || re.ErrorCode != tt.code {
					t.Fatalf("err = %v, want the operation's error with code %s", err, tt.code)
				}
				var ae *arm.Error
				isTyped := errors.As(err, &ae)
				if tt.kind == nil {
					if isTyped || !strings.Contains(err.Error(), tt.message) {
						t.Errorf("err = %v, want azcore's error with the message intact", err)
					}
					return
				}
				if !errors.Is(err, tt.kind) || !isTyped || ae.Action == "" {
					t.Errorf("err = %v, want %v with an action", err, tt.kind)
				}
				// A second read of the result gives the same error.
				if _, err2 := p.Result(ctx(t)); !errors.Is(err2, tt.kind) {
					t.Errorf("Result = %v", err2)
				}
			})
		}
	}
}
