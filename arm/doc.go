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
// Updates are minimal PATCH bodies: only the non-nil fields of a
// ProxyAgentSettings are sent, so endpoints the caller did not name keep
// their configuration, and an endpoint never carries both a mode and a
// profile reference. Requests the service would refuse are refused before
// any call, with an *Error carrying the service's code (BadRequest,
// InvalidParameter, ...), a sentinel for errors.Is and the action to take;
// service errors are mapped to the same *Error, which still wraps the
// *azcore.ResponseError.
//
// The sharp edge: success of an update only means ARM accepted the model.
// Protection starts when the guest agent has latched the key, seconds to
// minutes later; confirm it with WaitForGuestKeyIncarnation before relying
// on a reset. Errors from Poller.PollUntilDone come straight from azcore;
// pass them through MapError to get the typed form.
//
// Package armtest provides an in-memory fake of the ARM endpoints for tests.
package arm
