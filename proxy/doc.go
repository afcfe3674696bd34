// Package proxy is the hot path of the MSP guest agent: an HTTP/1.1 proxy
// that receives the connections the kernel redirects away from WireServer,
// HostGAPlugin and IMDS, finds out which process made each one, authorizes
// every request against the latched rules, adds the claims and date headers,
// signs the request with the latched key and forwards it to the host.
//
// The intended caller is package agent, which wires a [Server]
// to its collaborators through a few hooks in [Config], in the manner of
// httputil.ReverseProxy:
//
//   - a [CallerResolver] identifies the process behind a connection. The
//     production one is [ProcResolver], fed by the eBPF audit map through
//     the small [AuditLookup] interface; [StaticResolver] serves tests.
//   - [Latch] supplies the current keylatch.Snapshot. Each request reads
//     exactly one snapshot, which decides it, dates it and signs it, so a
//     key rotation can never produce a request signed with a half-updated
//     key or decided under other rules than it was signed for.
//   - Provision and AggregateStatus serve the agent's own endpoints
//     /provision and /gpa-aggregated-status, which the proxy answers before
//     it looks at the destination, as upstream does.
//   - AuditLog and Summaries receive one [msp.AuditRecord] per request.
//   - [Metrics] receives the measurements; package agent/metrics records
//     them as Prometheus series (and package agent serves them), so proxy
//     links no metrics library.
//
// The pipeline follows docs/protocol.md §4.3: method allow-list (405), traversal
// guard (403), the local endpoints, caller and destination (421 when the
// connection was not redirected), authorization (403 in Enforce; Audit
// forwards and logs), claims and date headers, signature, forwarding, and
// the x-ms-azure-host-authorization: value marker on the response. Beyond
// upstream, the proxy parses HTTP itself so that it can refuse smuggling
// (Content-Length with Transfer-Encoding), bound every size and timeout,
// write upstream exactly the header set it signed, and relay the host's
// header fields in its order and spelling; it removes any
// x-ms-azure-host-* header a client sends before anything else, never adds
// forwarding headers, serves only the three host endpoints, and reuses
// pooled keep-alive connections upstream.
//
// The sharp edge: the proxy trusts its CallerResolver completely. A resolver
// that answers for connections the kernel did not redirect turns the proxy
// into a signing oracle for anyone who can reach the listener, so the
// listener must stay on loopback and the resolver must consume each
// kernel record exactly once. In tests, never let Config.Dial reach a real
// metadata address: map the endpoints to loopback servers.
package proxy
