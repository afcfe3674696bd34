package arm

import (
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// Every operation takes a pointer to its own options struct, nil for the
// defaults, as the generated armcompute clients do; an empty struct keeps
// room for options without breaking callers.

// ClientGetVirtualMachineOptions are the options of GetVirtualMachine.
type ClientGetVirtualMachineOptions struct {
	// placeholder for future optional parameters
}

// ClientGetScaleSetOptions are the options of GetScaleSet.
type ClientGetScaleSetOptions struct {
	// placeholder for future optional parameters
}

// ClientGetScaleSetInstanceOptions are the options of GetScaleSetInstance.
type ClientGetScaleSetInstanceOptions struct {
	// placeholder for future optional parameters
}

// ClientListScaleSetInstancesOptions are the options of
// NewListScaleSetInstancesPager.
type ClientListScaleSetInstancesOptions struct {
	// placeholder for future optional parameters
}

// ClientGetVirtualMachineGuestStateOptions are the options of
// GetVirtualMachineGuestState.
type ClientGetVirtualMachineGuestStateOptions struct {
	// placeholder for future optional parameters
}

// ClientGetScaleSetInstanceGuestStateOptions are the options of
// GetScaleSetInstanceGuestState.
type ClientGetScaleSetInstanceGuestStateOptions struct {
	// placeholder for future optional parameters
}

// ClientGetProfileOptions are the options of GetProfile.
type ClientGetProfileOptions struct {
	// placeholder for future optional parameters
}

// ClientListProfilesOptions are the options of NewListProfilesPager.
type ClientListProfilesOptions struct {
	// placeholder for future optional parameters
}

// ClientGetProfileVersionOptions are the options of GetProfileVersion.
type ClientGetProfileVersionOptions struct {
	// placeholder for future optional parameters
}

// ClientListProfileVersionsOptions are the options of
// NewListProfileVersionsPager.
type ClientListProfileVersionsOptions struct {
	// placeholder for future optional parameters
}

// ClientBeginCreateOrUpdateProfileOptions are the options of
// BeginCreateOrUpdateProfile.
type ClientBeginCreateOrUpdateProfileOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
}

// ClientBeginDeleteProfileOptions are the options of BeginDeleteProfile.
type ClientBeginDeleteProfileOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
}

// ClientBeginCreateOrUpdateProfileVersionOptions are the options of
// BeginCreateOrUpdateProfileVersion.
type ClientBeginCreateOrUpdateProfileVersionOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
}

// ClientBeginDeleteProfileVersionOptions are the options of
// BeginDeleteProfileVersion.
type ClientBeginDeleteProfileVersionOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
}

// ClientBeginManualUpgradeOptions are the options of BeginManualUpgrade.
type ClientBeginManualUpgradeOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
}

// ClientBeginUpdateVirtualMachineSettingsOptions are the options of
// BeginUpdateVirtualMachineSettings.
type ClientBeginUpdateVirtualMachineSettingsOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
	// IfMatch applies the change only if the VM still has this etag. When
	// the client reads the VM anyway (KeyIncarnationID set, or
	// CheckProfiles), it uses the etag it read unless IfMatch is set.
	IfMatch *azcore.ETag
	// CheckProfiles reads the VM and every linked profile version first and
	// refuses a version that is missing in the VM's region or whose osType
	// or applicableHostEndpoint does not fit, as the service would.
	CheckProfiles bool
	// DisableClientValidation sends the change unchecked, so the service
	// decides. Meant for tests of service-side behaviour.
	DisableClientValidation bool
}

// ClientBeginUpdateScaleSetSettingsOptions are the options of
// BeginUpdateScaleSetSettings; the fields work as in
// ClientBeginUpdateVirtualMachineSettingsOptions, on the scale-set model.
type ClientBeginUpdateScaleSetSettingsOptions struct {
	// ResumeToken resumes a poller from Poller.ResumeToken; the other
	// arguments are then ignored.
	ResumeToken string
	// IfMatch applies the change only if the scale set still has this etag.
	IfMatch *azcore.ETag
	// CheckProfiles checks linked profile versions against the model's OS
	// disk and the scale set's region first.
	CheckProfiles bool
	// DisableClientValidation sends the change unchecked.
	DisableClientValidation bool
}

// updateOptions is what both settings updates take from their options.
type updateOptions struct {
	resumeToken             string
	ifMatch                 *azcore.ETag
	checkProfiles           bool
	disableClientValidation bool
}

// ClientBeginResetVirtualMachineKeyOptions are the options of
// BeginResetVirtualMachineKey.
type ClientBeginResetVirtualMachineKeyOptions struct {
	// ResumeToken resumes the poller of a reset from
	// KeyReset.Poller.ResumeToken: nothing is read or written, and the
	// KeyReset carries the values of the original call.
	ResumeToken string
	// MaxAttempts bounds the read-raise-write rounds when other writers
	// change the VM in between (412). Default 10.
	MaxAttempts int
	// RetryDelay is the upper bound of the random pause before another
	// round. Default 200ms.
	RetryDelay time.Duration
	// KeyIncarnationID, when set, is the value to write instead of the
	// current one plus one. It must be above the current value: an equal
	// or lower one is refused with ErrKeyIncarnationNotIncreasing, before
	// any write. When another writer raced past it, the reset fails.
	KeyIncarnationID *int32
}

// ClientBeginResetScaleSetInstanceKeyOptions are the options of
// BeginResetScaleSetInstanceKey; the fields work as in
// ClientBeginResetVirtualMachineKeyOptions.
type ClientBeginResetScaleSetInstanceKeyOptions struct {
	// ResumeToken resumes the poller of a reset.
	ResumeToken string
	// MaxAttempts bounds the read-raise-write rounds. Default 10.
	MaxAttempts int
	// RetryDelay bounds the random pause between rounds. Default 200ms.
	RetryDelay time.Duration
	// KeyIncarnationID, when set, is the value to write; it must be above
	// the current one.
	KeyIncarnationID *int32
}

// resetOptions is what both key resets take from their options.
type resetOptions struct {
	resumeToken string
	maxAttempts int
	retryDelay  time.Duration
	key         *int32
}

// optional returns *o, or the zero options when o is nil.
func optional[O any](o *O) O {
	if o == nil {
		var zero O
		return zero
	}
	return *o
}

// deref returns *p, or the zero value when p is nil.
func deref[T any](p *T) T { return optional(p) }
