package arm_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

// TestUserAgentNamesThisModule: requests say they come from this module,
// not from "azsdk-go-arm" (which reads as azcore's own arm package), honour
// Telemetry.ApplicationID, and send nothing of ours when telemetry is off.
func TestUserAgentNamesThisModule(t *testing.T) {
	tests := []struct {
		name      string
		telemetry policy.TelemetryOptions
		want      []string
		notWant   []string
	}{
		{name: "default", want: []string{"gpa-arm/v", "github.com/metadatasec/gpa/arm"}, notWant: []string{"azsdk-go-arm"}},
		{name: "application id first", telemetry: policy.TelemetryOptions{ApplicationID: "rollout-job"}, want: []string{"rollout-job gpa-arm/v"}},
		{name: "telemetry disabled", telemetry: policy.TelemetryOptions{Disabled: true}, notWant: []string{"gpa-arm", "azsdk-go"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, nil)
			srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
			o := arm.ClientOptions{ClientOptions: srv.ClientOptions()}
			o.Telemetry = tt.telemetry
			c, err := arm.NewClient(sub, fakeCred(), &o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.GetVirtualMachine(ctx(t), rg, "vm1", nil); err != nil {
				t.Fatal(err)
			}
			ua := srv.Requests()[0].Header.Get("User-Agent")
			for _, w := range tt.want {
				if !strings.HasPrefix(ua, w) && !strings.Contains(ua, w) {
					t.Errorf("User-Agent %q lacks %q", ua, w)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(ua, nw) {
					t.Errorf("User-Agent %q contains %q", ua, nw)
				}
			}
			if tt.telemetry.ApplicationID != "" && !strings.HasPrefix(ua, tt.telemetry.ApplicationID+" ") {
				t.Errorf("User-Agent %q does not start with the application id", ua)
			}
		})
	}
}

// TestResetKeyResume: a key reset's poller resumes from its token in
// another client, without reading or writing anything, and still says which
// value the original call wrote.
func TestResetKeyResume(t *testing.T) {
	srv := newServer(t, &armtest.Options{LROPolls: 3})
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":6}`})
	c := newClient(t, srv, nil)
	r, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := r.Poller.ResumeToken()
	if err != nil {
		t.Fatal(err)
	}
	srv.ResetRequests()
	c2 := newClient(t, srv, nil)
	r2, err := c2.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", &arm.ClientBeginResetVirtualMachineKeyOptions{ResumeToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Previous != 6 || r2.KeyIncarnationID != 7 {
		t.Errorf("resumed reset %d -> %d, want 6 -> 7", r2.Previous, r2.KeyIncarnationID)
	}
	if len(srv.Requests()) != 0 {
		t.Errorf("resuming sent %d requests", len(srv.Requests()))
	}
	res, err := r2.Poller.PollUntilDone(ctx(t), fast)
	if err != nil {
		t.Fatal(err)
	}
	if k := res.ProxyAgentSettings().KeyIncarnationID; k == nil || *k != 7 {
		t.Errorf("keyIncarnationId = %v, want 7", k)
	}
	for _, req := range srv.Requests() {
		if req.Method != http.MethodGet {
			t.Errorf("resumed reset sent %s %s", req.Method, req.Path)
		}
	}
	// A token from another operation's result type is refused.
	if _, err := c2.BeginResetScaleSetInstanceKey(ctx(t), rg, "ss", "0", &arm.ClientBeginResetScaleSetInstanceKeyOptions{ResumeToken: tok}); err == nil {
		t.Error("a VM reset token resumed a scale-set instance reset")
	}
}
