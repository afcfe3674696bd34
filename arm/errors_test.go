package arm_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
)

// responseError builds the error azcore returns for an ARM error body.
func responseError(t *testing.T, status int, body string) error {
	t.Helper()
	u, _ := url.Parse("https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1")
	resp := &http.Response{
		StatusCode: status,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader([]byte(body))),
		Request:    &http.Request{Method: http.MethodPatch, URL: u},
	}
	return runtime.NewResponseError(resp)
}

func armError(code, message, target string) string {
	e := map[string]any{"code": code, "message": message}
	if target != "" {
		e["target"] = target
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return string(b)
}

// TestMapErrorGuideRows feeds MapError each row of the troubleshooting
// guide's "You got an error code" table, in the forms the service uses
// (specific code, BadRequest/InvalidParameter with the guide's text, with
// and without a target), and errors that are not in the guide.
func TestMapErrorGuideRows(t *testing.T) {
	const ref = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/inVMAccessControlProfiles/p/versions/1.0.0"
	tests := []struct {
		name   string
		status int
		body   string
		// kind is the sentinel; nil means the error must pass through
		// unchanged.
		kind   error
		action string // a word the action must contain
	}{
		{
			name: "ProxyAgentNotSupportedInRegion",
			body: armError("ProxyAgentNotSupportedInRegion", "Creation of VMs or Virtual Machine Scale Sets with ProxyAgent feature isn't supported in this region.", ""),
			kind: arm.ErrRegionNotSupported, action: "region",
		},
		{
			name: "SubscriptionNotEnabledForProxyAgentFeature",
			body: armError("SubscriptionNotEnabledForProxyAgentFeature", "The subscription is not registered for the private preview of ProxyAgent feature.", ""),
			kind: arm.ErrFeatureNotRegistered, action: "az feature register",
		},
		{
			name: "BadRequest wireServer profile reference used together with mode",
			body: armError("BadRequest", "The property 'securityProfile.proxyAgentSettings.wireServer.inVMAccessControlProfileReferenceId' can't be used together with property 'securityProfile.proxyAgentSettings.wireServer.mode'.", ""),
			kind: arm.ErrModeAndProfile, action: "not both",
		},
		{
			name: "BadRequest imds profile reference used together with mode, with target",
			body: armError("BadRequest", "The property securityProfile.proxyAgentSettings.imds.inVMAccessControlProfileReferenceId can't be used together with property securityProfile.proxyAgentSettings.imds.mode.", "securityProfile.proxyAgentSettings.imds"),
			kind: arm.ErrModeAndProfile, action: "not both",
		},
		{
			name: "BadRequest keyIncarnationId can only be incremented",
			body: armError("BadRequest", "The value securityProfile.proxyAgentSettings.keyIncarnationId can only be incremented.", ""),
			kind: arm.ErrKeyIncarnationNotIncreasing, action: "larger",
		},
		{
			name: "BadRequest wireServer mode is invalid",
			body: armError("BadRequest", "The value of parameter securityProfile.proxyAgentSettings.wireServer.mode is invalid.", ""),
			kind: arm.ErrInvalidMode, action: "Audit, Enforce, Disabled",
		},
		{
			name: "BadRequest imds mode is invalid, on a scale-set model",
			body: armError("BadRequest", "The value of parameter virtualMachineProfile.securityProfile.proxyAgentSettings.imds.mode is invalid.", "virtualMachineProfile.securityProfile.proxyAgentSettings.imds.mode"),
			kind: arm.ErrInvalidMode, action: "Audit, Enforce, Disabled",
		},
		{
			name: "InvalidParameter not a valid gallery inVMAccessControlProfile reference, no target",
			body: armError("InvalidParameter", "The resource id '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/inVMAccessControlProfiles/p' isn't a valid gallery inVMAccessControlProfile reference. A gallery inVMAccessControlProfile reference should be a valid resource identifier, of the format: '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/inVMAccessControlProfiles/{profileName}/versions/{version}'.", ""),
			kind: arm.ErrInvalidProfileReference, action: "/versions/",
		},
		{
			name: "GalleryInVMAccessControlProfileNotMatchOSDisk",
			body: armError("GalleryInVMAccessControlProfileNotMatchOSDisk", "Current Gallery InVMAccessControlProfile Version "+ref+" supports OS Windows, while current OSDisk's OS is Linux.", ""),
			kind: arm.ErrProfileOSMismatch, action: "osType",
		},
		{
			name: "BadRequest profile OS does not match the OS disk",
			body: armError("BadRequest", "Current Gallery InVMAccessControlProfile Version "+ref+" supports OS Windows, while current OSDisk's OS is Linux.", ""),
			kind: arm.ErrProfileOSMismatch, action: "osType",
		},
		{
			name: "GalleryInVMAccessControlProfileNotMatchHostEndpointType",
			body: armError("GalleryInVMAccessControlProfileNotMatchHostEndpointType", "Current Gallery InVMAccessControlProfile Version "+ref+" is for host endpoint WireServer, while current referred by IMDS.", ""),
			kind: arm.ErrProfileEndpointMismatch, action: "IMDS profile",
		},
		{
			name: "BadRequest profile is for host endpoint WireServer while referred by IMDS",
			body: armError("BadRequest", "Current Gallery InVMAccessControlProfile Version "+ref+" is for host endpoint WireServer, while current referred by IMDS.", ""),
			kind: arm.ErrProfileEndpointMismatch, action: "IMDS profile",
		},
		{
			name: "InVMAccessControlProfileNotFound profile isn't available",
			body: armError("InVMAccessControlProfileNotFound", "The gallery InVMAccessControlProfile '"+ref+"' isn't available. Verify that the InVMAccessControlProfileReferenceId passed in is correct.", ""),
			kind: arm.ErrProfileNotFound, action: "replicated",
		},
		{
			name: "InVMAccessControlProfileNotFound failed to prepare the metadata",
			body: armError("InVMAccessControlProfileNotFound", "Failed to prepare the InVMAccessControlProfile '"+ref+"' metadata for one or more resources due to an error: 'internal'.", ""),
			kind: arm.ErrProfileNotFound, action: "create a new profile version",
		},
		{
			name: "guide row inside error details",
			body: `{"error":{"code":"InvalidParameter","message":"One or more errors occurred.","details":[{"code":"BadRequest","message":"The value securityProfile.proxyAgentSettings.keyIncarnationId can only be incremented."}]}}`,
			kind: arm.ErrKeyIncarnationNotIncreasing, action: "larger",
		},
		{
			name:   "etag changed since read",
			status: http.StatusPreconditionFailed,
			body:   armError("PreconditionFailed", "The specified precondition 'If-Match' does not match.", ""),
			kind:   arm.ErrPreconditionFailed, action: "read the resource again",
		},
		// Not in the guide: never relabelled.
		{name: "unrelated upgradePolicy.mode change", body: armError("BadRequest", "Changing property 'upgradePolicy.mode' is not allowed.", "upgradePolicy.mode")},
		{name: "unrelated invalid mode of another resource", body: armError("InvalidParameter", "The value 'Fast' of parameter 'mode' is invalid.", "properties.storageProfile.mode")},
		{name: "unknown code mentioning keyIncarnationId", body: armError("OperationNotAllowed", "The value securityProfile.proxyAgentSettings.keyIncarnationId can only be incremented.", "")},
		{name: "unknown code", body: armError("AllocationFailed", "Allocation failed. We do not have sufficient capacity.", "")},
		{name: "BadRequest about something else", body: armError("BadRequest", "The request content was invalid and could not be deserialized.", "")},
		{name: "keyIncarnationId not a number", body: armError("InvalidParameter", "The value of keyIncarnationId is not a valid int32.", "securityProfile.proxyAgentSettings.keyIncarnationId")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status := tt.status
			if status == 0 {
				status = http.StatusBadRequest
			}
			in := responseError(t, status, tt.body)
			got := arm.MapError(in)
			if tt.kind == nil {
				if got != in {
					t.Fatalf("MapError relabelled an error outside the guide: %v", got)
				}
				var re *azcore.ResponseError
				if !errors.As(got, &re) {
					t.Fatal("not a ResponseError any more")
				}
				var body struct {
					Error struct{ Code, Message string }
				}
				mustUnmarshal(t, []byte(tt.body), &body)
				if re.ErrorCode != body.Error.Code || !strings.Contains(got.Error(), body.Error.Message) {
					t.Errorf("code %q / text %q, want code %q and message %q intact", re.ErrorCode, got.Error(), body.Error.Code, body.Error.Message)
				}
				return
			}
			if !errors.Is(got, tt.kind) {
				t.Fatalf("MapError = %v, want %v", got, tt.kind)
			}
			var ae *arm.Error
			if !errors.As(got, &ae) || !strings.Contains(ae.Action, tt.action) {
				t.Errorf("action = %q, want it to mention %q", ae.Action, tt.action)
			}
			var re *azcore.ResponseError
			if !errors.As(got, &re) {
				t.Error("mapped error lost the ResponseError")
			}
			if arm.MapError(got) != got {
				t.Error("mapping twice changed the error")
			}
		})
	}
}

// TestMapErrorKeepsCodeAndTarget checks what a caller reads off the typed
// error: the service's code, target and message.
func TestMapErrorKeepsCodeAndTarget(t *testing.T) {
	in := responseError(t, http.StatusBadRequest, armError("BadRequest",
		"The value of parameter securityProfile.proxyAgentSettings.imds.mode is invalid.", "securityProfile.proxyAgentSettings.imds.mode"))
	var ae *arm.Error
	if !errors.As(arm.MapError(in), &ae) {
		t.Fatal("not mapped")
	}
	got := []string{ae.Code, ae.Target, ae.Detail}
	want := []string{"BadRequest", "securityProfile.proxyAgentSettings.imds.mode", "The value of parameter securityProfile.proxyAgentSettings.imds.mode is invalid."}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
