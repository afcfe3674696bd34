package arm_test

import (
	"testing"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

func BenchmarkValidate(b *testing.B) {
	ref := versionID("wsLinux", "1.0.0")
	change := arm.ProxyAgentSettings{Enabled: ptr(true), WireServer: arm.LinkedProfile(ref), IMDS: arm.InlineMode(arm.ModeAudit)}
	for b.Loop() {
		if err := change.Validate(arm.DefaultComputeAPIVersion); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseGuestState(b *testing.B) {
	view := []byte(`{"extensions":[{"name":"ProxyAgentLinux","type":"Microsoft.CPlat.ProxyAgent.ProxyAgentLinux","substatuses":[{"code":"ComponentStatus/ProxyAgentStatus/succeeded","message":"{\"status\":\"SUCCESS\",\"keyLatchStatus\":{\"status\":\"RUNNING\",\"states\":{\"keyIncarnationId\":\"3\",\"secureChannelState\":\"WireServer Enforce -  IMDS Enforce - HostGA Enforce\"}}}"}]}]}`)
	for b.Loop() {
		if _, err := arm.ParseGuestState(view); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResetKey measures a full reset round trip (GET, PATCH, one poll,
// final GET) against the in-process fake, i.e. the client's own overhead.
func BenchmarkResetKey(b *testing.B) {
	srv := newServer(b, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true}`})
	c := newClient(b, srv, nil)
	for b.Loop() {
		r, err := c.BeginResetVirtualMachineKey(ctx(b), rg, "vm1", nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Poller.PollUntilDone(ctx(b), fast); err != nil {
			b.Fatal(err)
		}
	}
}
