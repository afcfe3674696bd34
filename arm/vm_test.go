package arm_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

func TestUpdateVirtualMachineSettings(t *testing.T) {
	ws := versionID("wsLinux", "1.0.0")
	tests := []struct {
		name     string
		initial  string
		change   arm.ProxyAgentSettings
		opts     *arm.ClientBeginUpdateVirtualMachineSettingsOptions
		wantBody string
		ifMatch  bool
		// wantStored is the settings the server holds afterwards.
		wantStored string
	}{
		{
			name:       "enable in audit",
			change:     arm.ProxyAgentSettings{Enabled: ptr(true), WireServer: arm.InlineMode(arm.ModeAudit), IMDS: arm.InlineMode(arm.ModeAudit)},
			wantBody:   `{"properties":{"securityProfile":{"proxyAgentSettings":{"enabled":true,"wireServer":{"mode":"Audit"},"imds":{"mode":"Audit"}}}}}`,
			wantStored: `{"enabled":true,"wireServer":{"mode":"Audit"},"imds":{"mode":"Audit"}}`,
		},
		{
			name:       "enforce wireServer only keeps imds",
			initial:    `{"enabled":true,"wireServer":{"mode":"Audit"},"imds":{"mode":"Audit"},"keyIncarnationId":2}`,
			change:     arm.ProxyAgentSettings{WireServer: arm.InlineMode(arm.ModeEnforce)},
			wantBody:   `{"properties":{"securityProfile":{"proxyAgentSettings":{"wireServer":{"mode":"Enforce"}}}}}`,
			wantStored: `{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"},"keyIncarnationId":2}`,
		},
		{
			name:       "mode to profile sends only the reference",
			initial:    `{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"}}`,
			change:     arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(ws)},
			opts:       &arm.ClientBeginUpdateVirtualMachineSettingsOptions{CheckProfiles: true},
			wantBody:   `{"properties":{"securityProfile":{"proxyAgentSettings":{"wireServer":{"inVMAccessControlProfileReferenceId":"` + ws + `"}}}}}`,
			ifMatch:    true,
			wantStored: `{"enabled":true,"wireServer":{"inVMAccessControlProfileReferenceId":"` + ws + `"},"imds":{"mode":"Audit"}}`,
		},
		{
			name:       "profile to mode sends only the mode",
			initial:    `{"enabled":true,"wireServer":{"inVMAccessControlProfileReferenceId":"` + ws + `"},"imds":{"mode":"Audit"}}`,
			change:     arm.ProxyAgentSettings{WireServer: arm.InlineMode(arm.ModeAudit)},
			wantBody:   `{"properties":{"securityProfile":{"proxyAgentSettings":{"wireServer":{"mode":"Audit"}}}}}`,
			wantStored: `{"enabled":true,"wireServer":{"mode":"Audit"},"imds":{"mode":"Audit"}}`,
		},
		{
			name:       "explicit key value reads first and sends If-Match",
			initial:    `{"enabled":true,"keyIncarnationId":4}`,
			change:     arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](10)},
			wantBody:   `{"properties":{"securityProfile":{"proxyAgentSettings":{"keyIncarnationId":10}}}}`,
			ifMatch:    true,
			wantStored: `{"enabled":true,"keyIncarnationId":10}`,
		},
		{
			name:       "disable",
			initial:    `{"enabled":true,"wireServer":{"mode":"Enforce"}}`,
			change:     arm.ProxyAgentSettings{Enabled: ptr(false)},
			wantBody:   `{"properties":{"securityProfile":{"proxyAgentSettings":{"enabled":false}}}}`,
			wantStored: `{"enabled":false,"wireServer":{"mode":"Enforce"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, &armtest.Options{LROPolls: 2})
			seedProfiles(srv)
			srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: tt.initial})
			c := newClient(t, srv, nil)
			p, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", tt.change, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.PollUntilDone(ctx(t), fast)
			if err != nil {
				t.Fatal(err)
			}
			if val(res.Properties.ProvisioningState) != "Succeeded" {
				t.Errorf("provisioningState = %q", val(res.Properties.ProvisioningState))
			}
			w := writes(srv)
			if len(w) != 1 {
				t.Fatalf("got %d writes, want 1: %+v", len(w), w)
			}
			req := w[0]
			if req.Method != http.MethodPatch || req.Path != vmID("vm1") || req.APIVersion() != arm.DefaultComputeAPIVersion {
				t.Errorf("request = %s %s api-version=%s", req.Method, req.Path, req.APIVersion())
			}
			if got := req.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := req.Header.Get("Authorization"); got != "Bearer fake_token" {
				t.Errorf("Authorization = %q", got)
			}
			if got := req.Header.Get("If-Match"); (got != "") != tt.ifMatch {
				t.Errorf("If-Match = %q, want present=%v", got, tt.ifMatch)
			}
			jsonEqual(t, "body", req.Body, tt.wantBody)
			jsonEqual(t, "stored settings", srv.ProxyAgentSettings(vmID("vm1")), tt.wantStored)
			if err := tt.change.AppliedTo(res.ProxyAgentSettings()); err != nil {
				t.Errorf("AppliedTo(result) = %v", err)
			}
		})
	}
}

func TestErrorTable(t *testing.T) {
	ws := versionID("wsLinux", "1.0.0")
	tests := []struct {
		name    string
		initial string
		setup   func(*armtest.Server)
		change  arm.ProxyAgentSettings
		// clientSide: the client refuses without sending the PATCH.
		clientSide bool
		// clientOnly: no service variant (the fake, like the service's
		// documentation, says nothing about it).
		clientOnly bool
		kind       error
		code       string
		// serviceCode is the code the service answers with, when not code.
		serviceCode string
		action      string // a word the action must contain
	}{
		{
			name:       "mode and profile together",
			change:     arm.ProxyAgentSettings{WireServer: &arm.HostEndpointSettings{Mode: ptr(arm.ModeEnforce), InVMAccessControlProfileReferenceID: &ws}},
			clientSide: true, kind: arm.ErrModeAndProfile, code: "BadRequest", action: "not both",
		},
		{
			name:       "keyIncarnationId going down",
			initial:    `{"enabled":true,"keyIncarnationId":5}`,
			change:     arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](3)},
			clientSide: true, kind: arm.ErrKeyIncarnationNotIncreasing, code: "BadRequest", action: "larger",
		},
		{
			name:       "keyIncarnationId equal to the current one",
			initial:    `{"enabled":true,"keyIncarnationId":5}`,
			change:     arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](5)},
			clientSide: true, clientOnly: true, kind: arm.ErrKeyIncarnationNotIncreasing, code: "BadRequest", action: "larger",
		},
		{
			name:       "invalid mode",
			change:     arm.ProxyAgentSettings{IMDS: arm.InlineMode("Enable")},
			clientSide: true, kind: arm.ErrInvalidMode, code: "BadRequest", action: "Audit, Enforce, Disabled",
		},
		{
			name:       "profile id instead of version id",
			change:     arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(profileID("wsLinux"))},
			clientSide: true, kind: arm.ErrInvalidProfileReference, code: "InvalidParameter", action: "/versions/",
		},
		{
			name:       "profile for another OS",
			change:     arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(versionID("wsWindows", "1.0.0"))},
			clientSide: true, kind: arm.ErrProfileOSMismatch, code: "GalleryInVMAccessControlProfileNotMatchOSDisk", action: "osType",
		},
		{
			name:       "profile for the other endpoint",
			change:     arm.ProxyAgentSettings{IMDS: arm.LinkedProfile(ws)},
			clientSide: true, kind: arm.ErrProfileEndpointMismatch, code: "GalleryInVMAccessControlProfileNotMatchHostEndpointType", action: "IMDS profile",
			serviceCode: "BadRequest",
		},
		{
			name:       "profile version not replicated to the region",
			change:     arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(versionID("wsLinux", "0.9.0"))},
			clientSide: true, kind: arm.ErrProfileNotFound, code: "InVMAccessControlProfileNotFound", action: "replicated",
		},
		{
			name:       "profile version missing",
			change:     arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(versionID("wsLinux", "9.9.9"))},
			clientSide: true, kind: arm.ErrProfileNotFound, code: "InVMAccessControlProfileNotFound", action: "replicated",
		},
		{
			name:   "feature not registered",
			setup:  func(s *armtest.Server) { s.SetFeatureRegistered(sub, false) },
			change: arm.ProxyAgentSettings{Enabled: ptr(true)},
			kind:   arm.ErrFeatureNotRegistered, code: "SubscriptionNotEnabledForProxyAgentFeature", action: "ProxyAgentPreview",
		},
		{
			name:   "region not supported",
			setup:  func(s *armtest.Server) { s.SetRegionSupported(region, false) },
			change: arm.ProxyAgentSettings{Enabled: ptr(true)},
			kind:   arm.ErrRegionNotSupported, code: "ProxyAgentNotSupportedInRegion", action: "region",
		},
	}
	for _, tt := range tests {
		for _, skip := range []bool{false, true} {
			if skip && tt.clientOnly {
				continue
			}
			name := tt.name + "/client"
			if skip {
				name = tt.name + "/service"
			}
			t.Run(name, func(t *testing.T) {
				srv := newServer(t, nil)
				seedProfiles(srv)
				srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: tt.initial})
				if tt.setup != nil {
					tt.setup(srv)
				}
				before, _ := srv.Resource(vmID("vm1"))
				c := newClient(t, srv, nil)
				_, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", tt.change,
					&arm.ClientBeginUpdateVirtualMachineSettingsOptions{CheckProfiles: true, DisableClientValidation: skip})
				if !errors.Is(err, tt.kind) {
					t.Fatalf("err = %v, want %v", err, tt.kind)
				}
				var ae *arm.Error
				if !errors.As(err, &ae) {
					t.Fatalf("err %T is not *arm.Error", err)
				}
				want := tt.code
				if skip && tt.serviceCode != "" {
					want = tt.serviceCode
				}
				if ae.Code != want {
					t.Errorf("Code = %q, want %q", ae.Code, want)
				}
				if !strings.Contains(ae.Action, tt.action) {
					t.Errorf("Action = %q, want it to mention %q", ae.Action, tt.action)
				}
				sent := len(writes(srv)) > 0
				if sent == (tt.clientSide && !skip) {
					t.Errorf("PATCH sent = %v, want %v", sent, !(tt.clientSide && !skip))
				}
				var re *azcore.ResponseError
				if isService := errors.As(err, &re); isService != sent {
					t.Errorf("wraps ResponseError = %v, want %v", isService, sent)
				}
				after, _ := srv.Resource(vmID("vm1"))
				if d := cmp.Diff(string(before), string(after)); d != "" {
					t.Errorf("refused change modified the VM:\n%s", d)
				}
			})
		}
	}
}

func TestValidateStatic(t *testing.T) {
	tests := []struct {
		name   string
		change arm.ProxyAgentSettings
		api    string
		kind   error
	}{
		{"empty", arm.ProxyAgentSettings{}, "", arm.ErrInvalidRequest},
		{"deprecated top-level mode", arm.ProxyAgentSettings{Mode: ptr(arm.ModeAudit)}, "", arm.ErrInvalidRequest},
		{"negative key", arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](-1)}, "", arm.ErrKeyIncarnationNotIncreasing},
		{"empty endpoint", arm.ProxyAgentSettings{IMDS: &arm.HostEndpointSettings{}}, "", arm.ErrInvalidRequest},
		{"lowercase mode", arm.ProxyAgentSettings{IMDS: arm.InlineMode("audit")}, "", arm.ErrInvalidMode},
		{"local rules on old api", arm.ProxyAgentSettings{IMDS: &arm.HostEndpointSettings{UseLocalFileRules: ptr(true)}}, "2025-04-01", arm.ErrInvalidRequest},
		{"local rules on new api", arm.ProxyAgentSettings{IMDS: &arm.HostEndpointSettings{UseLocalFileRules: ptr(true)}}, "2026-04-01", nil},
		{"extension on old api", arm.ProxyAgentSettings{AddProxyAgentExtension: ptr(true)}, "2024-11-01", arm.ErrInvalidRequest},
		{"garbage reference", arm.ProxyAgentSettings{WireServer: arm.LinkedProfile("not-an-id")}, "", arm.ErrInvalidProfileReference},
		{"other provider", arm.ProxyAgentSettings{WireServer: arm.LinkedProfile("/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/galleries/g/inVMAccessControlProfiles/p/versions/1")}, "", arm.ErrInvalidProfileReference},
		{"valid", arm.ProxyAgentSettings{Enabled: ptr(true), WireServer: arm.InlineMode(arm.ModeEnforce), IMDS: arm.LinkedProfile(versionID("p", "1.0.0"))}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.change.Validate(tt.api)
			if tt.kind == nil {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.kind) {
				t.Fatalf("Validate = %v, want %v", err, tt.kind)
			}
		})
	}
}

func TestParseProfileVersionID(t *testing.T) {
	got, err := arm.ParseProfileVersionID(versionID("wsLinux", "1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	want := arm.ProfileVersionRef{SubscriptionID: sub, ResourceGroup: rg, Gallery: gallery, Profile: "wsLinux", Version: "1.0.0"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got.String() != versionID("wsLinux", "1.0.0") {
		t.Errorf("String = %q", got.String())
	}
}

func TestClientOptions(t *testing.T) {
	srv := newServer(t, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})

	t.Run("api versions are per provider", func(t *testing.T) {
		srv.ResetRequests()
		c := newClient(t, srv, &arm.ClientOptions{ComputeAPIVersion: "2026-04-01", GalleryAPIVersion: "2026-03-03"})
		if _, err := c.GetVirtualMachine(ctx(t), rg, "vm1", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetProfile(ctx(t), rg, gallery, "missing", nil); err == nil {
			t.Fatal("GetProfile of a missing profile succeeded")
		}
		var got []string
		for _, r := range srv.Requests() {
			got = append(got, r.APIVersion())
		}
		if d := cmp.Diff([]string{"2026-04-01", "2026-03-03"}, got); d != "" {
			t.Errorf("api-versions (-want +got):\n%s", d)
		}
	})
	t.Run("azcore APIVersion is refused", func(t *testing.T) {
		o := arm.ClientOptions{ClientOptions: srv.ClientOptions()}
		o.APIVersion = "2020-01-01"
		if _, err := arm.NewClient(sub, &fake.TokenCredential{}, &o); !errors.Is(err, arm.ErrInvalidRequest) {
			t.Fatalf("NewClient = %v", err)
		}
	})
	t.Run("cloud without ARM config is refused", func(t *testing.T) {
		o := arm.ClientOptions{ClientOptions: azarm.ClientOptions{ClientOptions: policy.ClientOptions{Cloud: cloud.Configuration{}}}}
		o.Cloud.Services = map[cloud.ServiceName]cloud.ServiceConfiguration{}
		if _, err := arm.NewClient(sub, &fake.TokenCredential{}, &o); err == nil {
			t.Fatal("NewClient accepted a cloud without Resource Manager")
		}
	})
	t.Run("empty names never reach the wire", func(t *testing.T) {
		srv.ResetRequests()
		c := newClient(t, srv, nil)
		if _, err := c.GetVirtualMachine(ctx(t), rg, "", nil); !errors.Is(err, arm.ErrInvalidRequest) {
			t.Errorf("GetVirtualMachine = %v", err)
		}
		if _, err := c.GetScaleSetInstance(ctx(t), "", "s", "0", nil); !errors.Is(err, arm.ErrInvalidRequest) {
			t.Errorf("GetScaleSetInstance = %v", err)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Errorf("%d requests sent", n)
		}
	})
	t.Run("credential failure", func(t *testing.T) {
		cred := &fake.TokenCredential{}
		cred.SetError(errors.New("no token"))
		o := arm.ClientOptions{ClientOptions: srv.ClientOptions()}
		c, err := arm.NewClient(sub, cred, &o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetVirtualMachine(ctx(t), rg, "vm1", nil); err == nil || !strings.Contains(err.Error(), "no token") {
			t.Errorf("GetVirtualMachine = %v", err)
		}
	})
}

func TestThrottling(t *testing.T) {
	srv := newServer(t, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
	srv.Throttle(2, 0)
	c := newClient(t, srv, nil)
	vm, err := c.GetVirtualMachine(ctx(t), rg, "vm1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Name != "vm1" || val(vm.ETag) == "" {
		t.Errorf("vm = %+v", vm.VirtualMachine)
	}
	if n := len(srv.Requests()); n != 3 {
		t.Errorf("%d requests, want 3 (two throttled)", n)
	}

	srv.Throttle(10, 0)
	_, err = c.GetVirtualMachine(ctx(t), rg, "vm1", nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests || re.ErrorCode != "TooManyRequests" {
		t.Fatalf("err = %v, want a 429 after retries are exhausted", err)
	}
}

func TestUpdateIfMatch(t *testing.T) {
	srv := newServer(t, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux"})
	c := newClient(t, srv, nil)
	vm, err := c.GetVirtualMachine(ctx(t), rg, "vm1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else changes the VM after our read.
	p, err := c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{Enabled: ptr(true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctx(t), fast); err != nil {
		t.Fatal(err)
	}
	_, err = c.BeginUpdateVirtualMachineSettings(ctx(t), rg, "vm1", arm.ProxyAgentSettings{Enabled: ptr(false)}, &arm.ClientBeginUpdateVirtualMachineSettingsOptions{IfMatch: vm.ETag})
	if !errors.Is(err, arm.ErrPreconditionFailed) {
		t.Fatalf("err = %v, want ErrPreconditionFailed", err)
	}
	jsonEqual(t, "settings", srv.ProxyAgentSettings(vmID("vm1")), `{"enabled":true}`)
	w := writes(srv)
	if got := w[len(w)-1].Header.Get("If-Match"); got != string(*vm.ETag) {
		t.Errorf("If-Match = %q, want %q", got, *vm.ETag)
	}
}

func TestUpdateScaleSetCheckProfiles(t *testing.T) {
	srv := newServer(t, nil)
	seedProfiles(srv)
	srv.AddScaleSet(vmssID("ss1"), armtest.ScaleSet{Location: region, OSType: "Windows", UpgradeMode: "Automatic"})
	c := newClient(t, srv, nil)
	_, err := c.BeginUpdateScaleSetSettings(ctx(t), rg, "ss1", arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(versionID("wsLinux", "1.0.0"))}, &arm.ClientBeginUpdateScaleSetSettingsOptions{CheckProfiles: true})
	if !errors.Is(err, arm.ErrProfileOSMismatch) {
		t.Fatalf("err = %v", err)
	}
	p, err := c.BeginUpdateScaleSetSettings(ctx(t), rg, "ss1", arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(versionID("wsWindows", "1.0.0"))}, &arm.ClientBeginUpdateScaleSetSettingsOptions{CheckProfiles: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctx(t), fast); err != nil {
		t.Fatal(err)
	}
	if got := writes(srv); len(got) != 1 || got[0].Header.Get("If-Match") == "" {
		t.Errorf("writes = %+v", got)
	}
}

func TestAppliedTo(t *testing.T) {
	ref := versionID("wsLinux", "1.0.0")
	tests := []struct {
		name   string
		change arm.ProxyAgentSettings
		got    *arm.ProxyAgentSettings
		field  string // empty: applied
	}{
		{"applied", arm.ProxyAgentSettings{Enabled: ptr(true), IMDS: arm.InlineMode(arm.ModeAudit)},
			&arm.ProxyAgentSettings{Enabled: ptr(true), IMDS: arm.InlineMode(arm.ModeAudit), WireServer: arm.InlineMode(arm.ModeEnforce)}, ""},
		{"nothing read", arm.ProxyAgentSettings{Enabled: ptr(true)}, nil, "enabled"},
		{"other mode", arm.ProxyAgentSettings{IMDS: arm.InlineMode(arm.ModeEnforce)}, &arm.ProxyAgentSettings{IMDS: arm.InlineMode(arm.ModeAudit)}, "imds.mode"},
		{"link kept after switch to mode", arm.ProxyAgentSettings{WireServer: arm.InlineMode(arm.ModeAudit)},
			&arm.ProxyAgentSettings{WireServer: &arm.HostEndpointSettings{Mode: ptr(arm.ModeAudit), InVMAccessControlProfileReferenceID: &ref}}, "wireServer.inVMAccessControlProfileReferenceId"},
		{"mode kept after switch to link", arm.ProxyAgentSettings{WireServer: arm.LinkedProfile(ref)},
			&arm.ProxyAgentSettings{WireServer: &arm.HostEndpointSettings{Mode: ptr(arm.ModeAudit), InVMAccessControlProfileReferenceID: &ref}}, "wireServer.mode"},
		{"key lower", arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](4)}, &arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](3)}, "keyIncarnationId"},
		{"key raised further by another reset", arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](4)}, &arm.ProxyAgentSettings{KeyIncarnationID: ptr[int32](6)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.change.AppliedTo(tt.got)
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ae *arm.Error
			if !errors.Is(err, arm.ErrNotApplied) || !errors.As(err, &ae) {
				t.Fatalf("err = %v", err)
			}
			if want := "securityProfile.proxyAgentSettings." + tt.field; ae.Target != want {
				t.Errorf("Target = %q, want %q", ae.Target, want)
			}
		})
	}
}
