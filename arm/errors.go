package arm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Sentinels for the conditions the service documents for MSP settings. Every
// error this package returns for one of them is an *Error whose Is matches the
// sentinel, whether the client caught the problem before calling ARM or the
// service reported it.
var (
	// ErrModeAndProfile: an endpoint carries both mode and
	// inVMAccessControlProfileReferenceId (service code BadRequest).
	ErrModeAndProfile = errors.New("endpoint has both mode and inVMAccessControlProfileReferenceId")
	// ErrKeyIncarnationNotIncreasing: keyIncarnationId would go down, or a
	// reset could not raise it (service code BadRequest).
	ErrKeyIncarnationNotIncreasing = errors.New("keyIncarnationId can only be incremented")
	// ErrInvalidMode: a mode outside Audit, Enforce, Disabled (BadRequest).
	ErrInvalidMode = errors.New("invalid mode")
	// ErrInvalidProfileReference: a reference that is not a gallery
	// inVMAccessControlProfile version id (InvalidParameter).
	ErrInvalidProfileReference = errors.New("invalid inVMAccessControlProfile version reference")
	// ErrProfileOSMismatch: the profile's osType differs from the VM's OS disk
	// (GalleryInVMAccessControlProfileNotMatchOSDisk).
	ErrProfileOSMismatch = errors.New("profile osType does not match the OS disk")
	// ErrProfileEndpointMismatch: the profile's applicableHostEndpoint differs
	// from the slot it is referenced from
	// (GalleryInVMAccessControlProfileNotMatchHostEndpointType).
	ErrProfileEndpointMismatch = errors.New("profile applicableHostEndpoint does not match the endpoint")
	// ErrProfileNotFound: the version does not exist in the VM's region
	// (InVMAccessControlProfileNotFound).
	ErrProfileNotFound = errors.New("inVMAccessControlProfile version not found")
	// ErrFeatureNotRegistered: the subscription lacks the MSP feature flag
	// (SubscriptionNotEnabledForProxyAgentFeature).
	ErrFeatureNotRegistered = errors.New("subscription not enabled for the ProxyAgent feature")
	// ErrRegionNotSupported: MSP is not offered in the resource's region
	// (ProxyAgentNotSupportedInRegion).
	ErrRegionNotSupported = errors.New("ProxyAgent not supported in region")
	// ErrPreconditionFailed: the resource changed since it was read (412).
	ErrPreconditionFailed = errors.New("resource changed since it was read (etag mismatch)")
	// ErrInvalidRequest: any other request this client refuses to send,
	// for example an empty resource name or an invalid rules body.
	ErrInvalidRequest = errors.New("invalid request")
)

// Service error codes, as ARM returns them in error.code.
const (
	CodeBadRequest                  = "BadRequest"
	CodeInvalidParameter            = "InvalidParameter"
	CodeProfileNotMatchOSDisk       = "GalleryInVMAccessControlProfileNotMatchOSDisk"
	CodeProfileNotMatchHostEndpoint = "GalleryInVMAccessControlProfileNotMatchHostEndpointType"
	CodeProfileNotFound             = "InVMAccessControlProfileNotFound"
	CodeFeatureNotEnabled           = "SubscriptionNotEnabledForProxyAgentFeature"
	CodeRegionNotSupported          = "ProxyAgentNotSupportedInRegion"
	CodePreconditionFailed          = "PreconditionFailed"
)

// Error is an MSP settings error with the service's code and what to do
// about it. It wraps the *azcore.ResponseError when the service produced it,
// so errors.As(err, new(*azcore.ResponseError)) keeps working.
type Error struct {
	// Code is the service error code (for example "BadRequest").
	Code string
	// Kind is the sentinel this error matches with errors.Is.
	Kind error
	// Target is the JSON path the problem is about, when known.
	Target string
	// Detail says what was wrong, without any key material.
	Detail string
	// Action is what the caller should do next.
	Action string
	// Err is the underlying service error; nil when the client refused the
	// request before sending it.
	Err error
}

// Error renders the code, what was wrong and the action to take.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("arm: ")
	b.WriteString(e.Code)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Target != "" {
		b.WriteString(" (")
		b.WriteString(e.Target)
		b.WriteString(")")
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Action != "" {
		b.WriteString("; action: ")
		b.WriteString(e.Action)
	}
	return b.String()
}

// Is matches the error's Kind.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap returns the service error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Actions, worded after the MSP troubleshooting guide.
const (
	actionModeAndProfile   = "set either mode or inVMAccessControlProfileReferenceId for an endpoint, not both"
	actionKeyIncarnation   = "send a keyIncarnationId larger than the current one; read the resource again first"
	actionInvalidMode      = "use one of Audit, Enforce, Disabled"
	actionInvalidReference = "reference a profile version: /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{gallery}/inVMAccessControlProfiles/{profile}/versions/{version}"
	actionOSMismatch       = "reference a profile whose osType matches the VM's OS disk"
	actionEndpointMismatch = "reference a WireServer profile from wireServer and an IMDS profile from imds"
	actionProfileNotFound  = "check that the profile version exists and is replicated to the VM's region (targetLocations); if metadata preparation failed, create a new profile version"
	actionFeature          = "register the feature: az feature register --namespace Microsoft.Compute --name ProxyAgentPreview, then az provider register --namespace Microsoft.Compute"
	actionRegion           = "use a region where the Metadata Security Protocol is available"
	actionPrecondition     = "read the resource again and retry the change"
)

func clientError(code string, kind error, target, detail, action string) *Error {
	return &Error{Code: code, Kind: kind, Target: target, Detail: detail, Action: action}
}

// MapError turns a service error about MSP settings into an *Error with the
// matching sentinel and action. Errors it does not recognise, including nil,
// are returned unchanged. Operations of this package already apply it;
// call it on errors from Poller.PollUntilDone, which azcore returns raw.
func MapError(err error) error {
	var re *azcore.ResponseError
	if err == nil || !errors.As(err, &re) {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	msg := serviceMessage(re)
	lower := strings.ToLower(msg)
	mk := func(kind error, action string) error {
		return &Error{Code: re.ErrorCode, Kind: kind, Detail: msg, Action: action, Err: err}
	}
	switch re.ErrorCode {
	case CodeFeatureNotEnabled:
		return mk(ErrFeatureNotRegistered, actionFeature)
	case CodeRegionNotSupported:
		return mk(ErrRegionNotSupported, actionRegion)
	case CodeProfileNotFound:
		return mk(ErrProfileNotFound, actionProfileNotFound)
	case CodeProfileNotMatchOSDisk:
		return mk(ErrProfileOSMismatch, actionOSMismatch)
	case CodeProfileNotMatchHostEndpoint:
		return mk(ErrProfileEndpointMismatch, actionEndpointMismatch)
	case CodeInvalidParameter:
		if strings.Contains(lower, "invmaccesscontrolprofilereferenceid") {
			return mk(ErrInvalidProfileReference, actionInvalidReference)
		}
	case CodeBadRequest:
		switch {
		case strings.Contains(lower, "keyincarnationid"):
			return mk(ErrKeyIncarnationNotIncreasing, actionKeyIncarnation)
		case strings.Contains(lower, "invmaccesscontrolprofilereferenceid") && strings.Contains(lower, "mode"):
			return mk(ErrModeAndProfile, actionModeAndProfile)
		case strings.Contains(lower, "osdisk") || strings.Contains(lower, "os disk"):
			return mk(ErrProfileOSMismatch, actionOSMismatch)
		case strings.Contains(lower, "mode"):
			return mk(ErrInvalidMode, actionInvalidMode)
		}
	}
	if re.StatusCode == http.StatusPreconditionFailed {
		return mk(ErrPreconditionFailed, actionPrecondition)
	}
	return err
}

// serviceMessage extracts error.message from an ARM error body. The body was
// buffered by azcore, so reading it again is safe.
func serviceMessage(re *azcore.ResponseError) string {
	if re.RawResponse == nil {
		return ""
	}
	body, err := runtime.Payload(re.RawResponse)
	if err != nil {
		return ""
	}
	var e armErrorBody
	if json.Unmarshal(body, &e) != nil || e.Error == nil {
		return ""
	}
	if e.Error.Target != "" {
		return fmt.Sprintf("%s (target %s)", e.Error.Message, e.Error.Target)
	}
	return e.Error.Message
}

type armErrorBody struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Target  string `json:"target"`
	} `json:"error"`
}
