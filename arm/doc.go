// Package arm is the VM owner's side of the Metadata Security Protocol: a
// client, built on azcore's ARM pipeline, that turns MSP on and off, sets
// the per-endpoint modes (Audit, Enforce, Disabled) or links gallery
// inVMAccessControlProfile versions, manages those profiles, resets a latched
// key by raising keyIncarnationId, and reads back what the guest agent
// reported through the instance view.
//
// It is meant for tools and automation that run outside the VM, such as a
// key-reset command or a rollout job; the guest side lives in the other
// packages of this module. It imports only msp and azcore.
//
// # Importing it next to azcore's arm package
//
// This package and github.com/Azure/azure-sdk-for-go/sdk/azcore/arm are
// both named arm, and ClientOptions embeds azcore's arm.ClientOptions, so a
// caller usually imports both. Keep this one as arm and alias azcore's, as
// this module does everywhere:
//
//	import (
//		azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
//		"github.com/metadatasec/gpa/arm"
//	)
//
//	client, err := arm.NewClient(subscriptionID, cred, &arm.ClientOptions{
//		ClientOptions: azarm.ClientOptions{ClientOptions: policy.ClientOptions{Cloud: cloud.AzureChina}},
//	})
//
// # Shape
//
// The API follows the generated armcompute clients: every method takes ctx
// first and a pointer to its own options struct last (nil for the
// defaults); reads return XxxResponse structs; writes are Begin* methods
// returning a *runtime.Poller that can be resumed from
// ClientBeginXxxOptions.ResumeToken; model fields the service may omit are
// pointers. Requests carry a User-Agent naming this module (gpa-arm).
//
// Updates are minimal PATCH bodies: only the non-nil fields of a
// ProxyAgentSettings are sent, so endpoints the caller did not name keep
// their configuration, and an endpoint never carries both a mode and a
// profile reference. Full-body PUTs (gallery profiles and versions read
// from the service, scale-set instances) send back every field the service
// returned, including fields this package does not model, with only the
// caller's changes applied.
//
// # Errors
//
// Requests the service would refuse are refused before any call, with an
// *Error carrying the service's code (BadRequest, InvalidParameter, ...), a
// sentinel for errors.Is and the troubleshooting guide's action. Service
// errors are recognised by the guide's codes and message texts and mapped to
// the same *Error, which still wraps the *azcore.ResponseError; this holds
// for the errors of Poller.PollUntilDone, Poll and Result too. Errors the
// guide does not list pass through unchanged.
//
// The sharp edge: success of an update only means ARM accepted the model.
// Protection starts when the guest agent has latched the key, seconds to
// minutes later; confirm it with WaitForGuestKeyIncarnation before relying
// on a reset.
//
// Package armtest provides an in-memory fake of the ARM endpoints for tests.
package arm
