// Package fleet reads and changes the MSP settings of many VMs and scale sets
// at once: it finds them, with their settings, image and OS, through Azure
// Resource Graph (one query across subscriptions or a management group,
// streamed a page at a time), compares them with a desired state, and rolls
// a change out in waves through package arm, with bounded parallelism, a
// failure budget and a state file to resume from.
//
// It is meant for SREs and rollout jobs that own thousands of VMs; the
// msp-fleet command is a thin front end. It imports only arm of this
// module, azcore and the Azure SDK's Resource Graph client.
//
// Every write is a PATCH of securityProfile.proxyAgentSettings alone, with
// If-Match on the etag read just before, carrying only the fields that
// differ from the desired state; an endpoint gets a mode or a profile
// reference, never both. Scale sets get a model update and, under a Manual
// upgrade policy, a manual upgrade of the instances not on the latest
// model. Key resets go through arm's reset, per VM and per instance.
//
// Throttling is shared by all workers of a Client: a 429 (Retry-After), an
// x-ms-ratelimit-remaining-* header running low, or Resource Graph's
// x-ms-user-quota-remaining reaching zero pauses every request of the client
// until the service's reset time, instead of letting each worker retry on
// its own.
//
// The sharp edge: Resource Graph is eventually consistent; a resource
// changed a minute ago may still show its old settings. Drift and apply
// therefore read each resource through ARM before writing it, and a rollout
// resumed from its state file re-reads rather than trusts what it recorded,
// so that a crash between a write and its record never writes twice.
package fleet
