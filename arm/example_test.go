package arm_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

// exampleEnv stands in for Azure: a fake ARM with one Linux VM. Real code
// builds the client with an azidentity credential and nil options.
func exampleEnv(settings string) (*armtest.Server, *arm.Client) {
	srv := armtest.NewServer(&armtest.Options{GuestAutoLatch: true})
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: settings})
	seedProfiles(srv)
	client, err := arm.NewClient(sub, &fake.TokenCredential{}, &arm.ClientOptions{ClientOptions: srv.ClientOptions()})
	if err != nil {
		log.Fatal(err)
	}
	return srv, client
}

// Real code polls less often; the default is 30 s.
var examplePoll = &runtime.PollUntilDoneOptions{Frequency: time.Millisecond}

func describe(s *arm.ProxyAgentSettings) string {
	ep := func(e *arm.HostEndpointSettings) string {
		switch {
		case e == nil:
			return "-"
		case e.InVMAccessControlProfileReferenceID != nil:
			ref, _ := arm.ParseProfileVersionID(*e.InVMAccessControlProfileReferenceID)
			return "profile " + ref.Profile + "@" + ref.Version
		case e.Mode != nil:
			return string(*e.Mode)
		}
		return "-"
	}
	return fmt.Sprintf("enabled=%v wireServer=%s imds=%s", s.Enabled != nil && *s.Enabled, ep(s.WireServer), ep(s.IMDS))
}

// Enable MSP with both endpoints in Audit, the recommended first step.
func ExampleClient_BeginUpdateVirtualMachineSettings() {
	srv, client := exampleEnv("")
	defer srv.Close()
	ctx := context.Background()

	enabled := true
	poller, err := client.BeginUpdateVirtualMachineSettings(ctx, "rg1", "vm1", arm.ProxyAgentSettings{
		Enabled:    &enabled,
		WireServer: arm.InlineMode(arm.ModeAudit),
		IMDS:       arm.InlineMode(arm.ModeAudit),
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	vm, err := poller.PollUntilDone(ctx, examplePoll)
	if err != nil {
		log.Fatal(err) // already the typed *arm.Error for the guide's errors
	}
	fmt.Println(describe(vm.ProxyAgentSettings()))
	// Output: enabled=true wireServer=Audit imds=Audit
}

// After reviewing the audit log, enforce WireServer; IMDS stays as it was.
func ExampleClient_BeginUpdateVirtualMachineSettings_enforce() {
	srv, client := exampleEnv(`{"enabled":true,"wireServer":{"mode":"Audit"},"imds":{"mode":"Audit"}}`)
	defer srv.Close()
	ctx := context.Background()

	poller, err := client.BeginUpdateVirtualMachineSettings(ctx, "rg1", "vm1", arm.ProxyAgentSettings{
		WireServer: arm.InlineMode(arm.ModeEnforce),
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	vm, err := poller.PollUntilDone(ctx, examplePoll)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(describe(vm.ProxyAgentSettings()))
	// Output: enabled=true wireServer=Enforce imds=Audit
}

// Replace WireServer's inline mode with custom rules from a gallery profile
// version, checking first that the profile fits the VM.
func ExampleClient_BeginUpdateVirtualMachineSettings_linkProfile() {
	srv, client := exampleEnv(`{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"}}`)
	defer srv.Close()
	ctx := context.Background()

	version := "/subscriptions/" + sub + "/resourceGroups/rg1/providers/Microsoft.Compute/galleries/gal/inVMAccessControlProfiles/wsLinux/versions/1.0.0"
	poller, err := client.BeginUpdateVirtualMachineSettings(ctx, "rg1", "vm1", arm.ProxyAgentSettings{
		WireServer: arm.LinkedProfile(version),
	}, &arm.ClientBeginUpdateVirtualMachineSettingsOptions{CheckProfiles: true})
	if err != nil {
		log.Fatal(err)
	}
	vm, err := poller.PollUntilDone(ctx, examplePoll)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(describe(vm.ProxyAgentSettings()))

	// The same profile cannot serve IMDS; the client says so before calling ARM.
	_, err = client.BeginUpdateVirtualMachineSettings(ctx, "rg1", "vm1", arm.ProxyAgentSettings{
		IMDS: arm.LinkedProfile(version),
	}, &arm.ClientBeginUpdateVirtualMachineSettingsOptions{CheckProfiles: true})
	var e *arm.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code)
	}
	// Output:
	// enabled=true wireServer=profile wsLinux@1.0.0 imds=Audit
	// GalleryInVMAccessControlProfileNotMatchHostEndpointType
}

// Reset a lost key and wait until the guest agent has latched the new one.
func ExampleClient_BeginResetVirtualMachineKey() {
	srv, client := exampleEnv(`{"enabled":true,"keyIncarnationId":4,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Enforce"}}`)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	reset, err := client.BeginResetVirtualMachineKey(ctx, "rg1", "vm1", nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := reset.Poller.PollUntilDone(ctx, examplePoll); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("keyIncarnationId %d -> %d\n", reset.Previous, reset.KeyIncarnationID)

	guest, err := arm.WaitForGuestKeyIncarnation(ctx, reset.KeyIncarnationID, func(ctx context.Context) (arm.GuestState, error) {
		r, err := client.GetVirtualMachineGuestState(ctx, "rg1", "vm1", nil)
		return r.GuestState, err
	}, &arm.WaitOptions{Interval: time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("guest latched %d: %s\n", *guest.KeyIncarnationID, guest.SecureChannelState)
	// Output:
	// keyIncarnationId 4 -> 5
	// guest latched 5: WireServer Enforce -  IMDS Enforce - HostGA Enforce
}
