// Package armtest is an in-memory fake of the Azure Resource Manager
// endpoints that MSP settings touch, in the manner of net/http/httptest: it
// serves VMs, scale sets and their instances, gallery
// inVMAccessControlProfiles and versions over TLS on loopback, so that code
// built on package arm, or on any azcore client, can be tested without a
// subscription.
//
// It is meant for this module's tests and for users testing their own
// automation. Start it with NewServer, seed resources (AddVirtualMachine,
// AddScaleSet, SetResource), hand Server.ClientOptions to the client, and
// inspect Server.Requests afterwards.
//
// The same resources answer Resource Graph queries (POST
// /providers/Microsoft.ResourceGraph/resources, graph.go), paged with
// $skipToken and optionally behind a per-user quota; AddFleet generates N
// resources, SetWriteRateLimit throttles writes as ARM's window does, and
// Writes records every accepted write to check a rollout against. The fake
// does not evaluate KQL: it returns every VM, scale set and instance in
// scope.
//
// The fake validates writes as the service documents it (mode XOR profile
// reference per endpoint, mode values, profile version ids, keyIncarnationId
// only growing, profile OS, endpoint and region, feature registration) and
// answers with ARM error bodies worded as the MSP troubleshooting guide
// words them (the host-endpoint mismatch under BadRequest, an invalid
// profile reference without a target). Writes are LROs with absolute
// Azure-AsyncOperation URLs; VMs, scale sets and instances carry etags and
// honour If-Match. Faults can be injected: throttling with Retry-After,
// failed operations, slow operations.
//
// The sharp edge: it is a model of documented behaviour, not the service.
// Where the documentation is silent (nested PATCH merge, deleting a profile
// that still has versions) it makes a conservative choice, described on the
// method concerned; verify such behaviour against a real subscription.
package armtest
