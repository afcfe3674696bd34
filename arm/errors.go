package arm

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
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
	actionInvalidReference = "reference a profile version: /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/inVMAccessControlProfiles/{profileName}/versions/{version}"
	actionOSMismatch       = "reference a profile version whose osType matches the VM's OS disk"
	actionEndpointMismatch = "reference a WireServer profile from wireServer and an IMDS profile from imds"
	actionProfileNotFound  = "check that the profile version exists and is replicated to the regions of the VM or scale set (targetLocations)"
	actionProfilePrepare   = "create a new profile version and start over"
	actionFeature          = "register the feature: az feature register --namespace Microsoft.Compute --name ProxyAgentPreview, then az provider register --namespace Microsoft.Compute"
	actionRegion           = "choose a region where the Metadata Security Protocol is supported"
	actionPrecondition     = "read the resource again and retry the change"
)

func clientError(code string, kind error, target, detail, action string) *Error {
	return &Error{Code: code, Kind: kind, Target: target, Detail: detail, Action: action}
}

// errorRule recognises one row of the troubleshooting guide's error table.
type errorRule struct {
	kind   error
	action string
	// code, when set, is a code that identifies the row by itself.
	code string
	// text, when set, recognises the row's message (with the target, when
	// the service gave one) under a generic code; it gets lowercase text.
	text func(string) bool
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// endpointModeRE matches a host endpoint's mode parameter (or the deprecated
// top-level one), not any property called mode.
var endpointModeRE = regexp.MustCompile(`proxyagentsettings\.((wireserver|imds)\.)?mode\b`)

// errorRules are in the order they are tried. Rows that share a generic code
// (BadRequest, InvalidParameter) are told apart by the guide's message text;
// the more specific texts come first.
var errorRules = []errorRule{
	{kind: ErrFeatureNotRegistered, action: actionFeature, code: CodeFeatureNotEnabled,
		text: func(m string) bool { return containsAll(m, "not registered", "proxyagent feature") }},
	{kind: ErrRegionNotSupported, action: actionRegion, code: CodeRegionNotSupported,
		text: func(m string) bool { return containsAll(m, "proxyagent feature", "supported in this region") }},
	// "Failed to prepare the InVMAccessControlProfile '{0}' metadata ..."
	{kind: ErrProfileNotFound, action: actionProfilePrepare,
		text: func(m string) bool {
			return containsAll(m, "failed to prepare", "invmaccesscontrolprofile", "metadata")
		}},
	// "The gallery InVMAccessControlProfile '{0}' isn't available. ..."
	{kind: ErrProfileNotFound, action: actionProfileNotFound, code: CodeProfileNotFound,
		text: func(m string) bool {
			return strings.Contains(m, "invmaccesscontrolprofile") && (strings.Contains(m, "isn't available") || strings.Contains(m, "is not available"))
		}},
	// "Current Gallery InVMAccessControlProfile Version {0} supports OS {1}, while current OSDisk's OS is {2}."
	{kind: ErrProfileOSMismatch, action: actionOSMismatch, code: CodeProfileNotMatchOSDisk,
		text: func(m string) bool { return containsAll(m, "invmaccesscontrolprofile", "supports os", "osdisk") }},
	// "Current Gallery InVMAccessControlProfile Version {0} is for host endpoint {1}, while current referred by {2}."
	{kind: ErrProfileEndpointMismatch, action: actionEndpointMismatch, code: CodeProfileNotMatchHostEndpoint,
		text: func(m string) bool { return containsAll(m, "is for host endpoint", "referred by") }},
	// "The property ...inVMAccessControlProfileReferenceId can't be used together with property ...mode"
	{kind: ErrModeAndProfile, action: actionModeAndProfile,
		text: func(m string) bool {
			return containsAll(m, "invmaccesscontrolprofilereferenceid", "together") && endpointModeRE.MatchString(m)
		}},
	// "The value securityProfile.proxyAgentSettings.keyIncarnationId can only be incremented."
	{kind: ErrKeyIncarnationNotIncreasing, action: actionKeyIncarnation,
		text: func(m string) bool { return containsAll(m, "keyincarnationid", "increment") }},
	// "The value of parameter securityProfile.proxyAgentSettings.wireServer.mode is invalid."
	{kind: ErrInvalidMode, action: actionInvalidMode,
		text: func(m string) bool { return strings.Contains(m, "invalid") && endpointModeRE.MatchString(m) }},
	// "The resource id '{0}' isn't a valid gallery inVMAccessControlProfile reference. ..."
	{kind: ErrInvalidProfileReference, action: actionInvalidReference,
		text: func(m string) bool {
			return strings.Contains(m, "valid gallery invmaccesscontrolprofile") ||
				(strings.Contains(m, "invmaccesscontrolprofilereferenceid") && (strings.Contains(m, "not a valid") || strings.Contains(m, "isn't a valid")))
		}},
}

// genericCode reports a code under which the service puts several rows of
// the guide, so that the message decides.
func genericCode(code string) bool {
	return code == "" || strings.EqualFold(code, CodeBadRequest) || strings.EqualFold(code, CodeInvalidParameter)
}

// MapError turns a service error about MSP settings into an *Error with the
// matching sentinel and action, recognised by the guide's specific codes or,
// under BadRequest and InvalidParameter, by the guide's message text (with or
// without a target, also in error.details). An error it does not recognise,
// including nil and every unknown code, is returned unchanged, code and
// message intact. Every operation and poller of this package already applies
// it; it is exported for errors from other azcore clients.
func MapError(err error) error {
	var re *azcore.ResponseError
	if err == nil || !errors.As(err, &re) {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	for _, se := range serviceErrors(re) {
		if e := mapOne(err, se); e != nil {
			return e
		}
	}
	if re.StatusCode == http.StatusPreconditionFailed {
		return &Error{Code: re.ErrorCode, Kind: ErrPreconditionFailed, Detail: firstMessage(re), Action: actionPrecondition, Err: err}
	}
	return err
}

func mapOne(err error, se serviceError) *Error {
	text := strings.ToLower(se.Message + " " + se.Target)
	// The guide's texts decide under generic codes and under its own
	// specific codes, where one code covers two rows (the two
	// InVMAccessControlProfileNotFound messages); never under other codes.
	textApplies := genericCode(se.Code) || slices.ContainsFunc(errorRules, func(r errorRule) bool {
		return r.code != "" && strings.EqualFold(r.code, se.Code)
	})
	for _, r := range errorRules {
		byCode := r.code != "" && strings.EqualFold(se.Code, r.code)
		byText := textApplies && r.text != nil && r.text(text)
		if byCode || byText {
			return &Error{Code: se.Code, Kind: r.kind, Target: se.Target, Detail: se.Message, Action: r.action, Err: err}
		}
	}
	return nil
}

// serviceError is one ARM error object: the top-level error or one of its
// details.
type serviceError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Target  string         `json:"target"`
	Details []serviceError `json:"details"`
}

// serviceErrors returns the error object of an ARM error body (also the
// body of a failed operation) followed by its details, depth first. The
// code comes from the ResponseError when the body has none. The body was
// buffered by azcore, so reading it again is safe.
func serviceErrors(re *azcore.ResponseError) []serviceError {
	top := serviceError{Code: re.ErrorCode}
	if re.RawResponse != nil {
		if body, err := runtime.Payload(re.RawResponse); err == nil {
			var e struct {
				Error *serviceError `json:"error"`
			}
			if json.Unmarshal(body, &e) == nil && e.Error != nil {
				top = *e.Error
				if top.Code == "" {
					top.Code = re.ErrorCode
				}
			}
		}
	}
	var out []serviceError
	var walk func(serviceError, int)
	walk = func(e serviceError, depth int) {
		out = append(out, e)
		if depth < 4 {
			for _, d := range e.Details {
				walk(d, depth+1)
			}
		}
	}
	walk(top, 0)
	return out
}

func firstMessage(re *azcore.ResponseError) string {
	return serviceErrors(re)[0].Message
}
