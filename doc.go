// Package gpa is a Go SDK and agent for the guest side of the Azure Metadata
// Security Protocol (MSP). This file is the package map; each package's own
// doc says what it is for and what it must not be used for.
//
// The packages are layered. A package imports only packages above it in this
// list, and nothing imports examples.
//
// msp holds the protocol vocabulary and pure logic: endpoints, modes,
// claims, the rules model and its evaluator, the canonical request form, and
// the HMAC request signer and verifier. It imports only the standard
// library. msp/msptest is a simulated Azure host (WireServer, HostGAPlugin,
// IMDS) in the style of net/http/httptest, for tests and the demo.
//
// internal/httpwire is the one HTTP/1.1 head reader and writer: the
// proxy's framing guards (no Content-Length with Transfer-Encoding, no
// conflicting lengths, no obsolete folding, bounded lines, heads and field
// counts) for the heads the proxy, the clients and msptest read, and the
// helper that runs an http.Handler into a buffer. It imports only msp;
// proxy, keylatch, status and msp/msptest use it. It is shared wire code,
// not a test double, and links into the agent.
//
// keylatch owns the long-lived key: the WireServer secure-channel client,
// the on-disk key store, and the latch state machine that publishes
// immutable snapshots (key, modes, compiled rules, epoch). It imports msp
// and internal/httpwire.
//
// ebpf owns the kernel half: the cgroup connect4/connect6/getpeername4 and
// audit programs (bpf2go, generated files committed), their loader, and
// typed maps for the redirect policy, the agent's exemption and the caller
// audit. It imports msp. ebpf/hostcheck, below it, is the host check
// (kernel, cgroup v2, BTF) that msp-validate shares.
//
// status owns what operators and cloud-init see: the status.json model and
// writer, provisioning state, and the --status client. It imports msp and
// internal/httpwire.
//
// proxy is the authorizing, signing HTTP proxy on 127.0.0.1:3080. It may
// import msp, internal/httpwire, keylatch, ebpf and status, and links no
// metrics library: it measures through its small Metrics interface.
//
// agent is the whole agent as an importable package: agent.New(cfg,
// opts).Run(ctx) wires ebpf, keylatch, proxy and status, with hooks for an
// embedder's audit sink, metrics registry, logger, dialer and caller
// resolver. agent/metrics holds the Prometheus series (it imports only msp
// and Prometheus); agent/logfile the rotated log files.
//
// arm is the VM owner's side: an azcore client for proxyAgentSettings,
// key reset and gallery rule profiles; arm/armtest is a fake ARM. It imports
// only msp (for the rules model) and azcore. arm/fleet reads a fleet
// through Azure Resource Graph and rolls MSP changes out in waves through
// arm; it imports arm, azcore and the SDK's Resource Graph client.
//
// msp/policy turns audit logs into rule sets and rule sets into
// predictions (simulate, learn, the three rule-set formats). It imports
// only msp.
//
// examples holds the thin programs: azure-proxy-agent (flags, upstream's
// configuration file, agent.Run and the --status client), msp-demo (the
// whole protocol on a simulated host), msp-validate, msp-keyreset,
// msp-policy and msp-fleet. Only msp-demo and the tests link msp/msptest
// and the test helpers under internal/.
//
// Platforms: ebpf, keylatch, proxy and agent are Linux-only (ebpf and
// keylatch fail to compile elsewhere with an error that names why). msp,
// status, arm and the operator tools msp-validate, msp-keyreset,
// msp-policy and msp-fleet also build and run on Windows; .ci/run
// cross-compiles and vets the packages listed in .ci/windows-packages.
//
// internal/testenv decides whether privileged tests run, skip, or (under
// CI=true) fail; internal/sandbox gives the demo and the tests a network
// namespace of their own; internal/agenttest runs the real agent binary in
// one for internal/e2e (end-to-end tests and the security suite) and
// internal/cmd/gpa-bench (the performance harness).
package gpa
