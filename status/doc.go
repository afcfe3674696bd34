// Package status is what operators and cloud-init see of the agent: the
// status.json model, its writer, the provisioning state behind GET
// /provision and the client of `azure-proxy-agent --status --wait N`.
//
// It is file- and wire-compatible with the upstream Guest Proxy Agent: the
// JSON names and values of status.json, the provisioned.tag and status.tag
// files, the /provision headers and answer, and the exit codes cloud-init
// acts on are all upstream's.
//
// Intended callers:
//
//   - every component (key latch, eBPF redirector, proxy listener) reports
//     its module state to one shared [Registry];
//   - the agent's main runs a [Writer] and a [Provision], and the proxy
//     serves [Provision] at [ProvisionPath] and [AggregateStatusHandler] at
//     [AggregateStatusPath], and feeds the two [SummaryAggregator]s and
//     [Registry.CountRequest] per request;
//   - the key latch selects on [Provision.Notify] and calls
//     [Provision.SetReady], [Provision.ResetKeyLatch] and
//     [Provision.SetLatched];
//   - `--status` calls [WaitProvisioned] and exits with
//     [WaitResult.ExitCode], printing [WaitResult.Report];
//   - validators and tests read files with [Parse] or [ReadFile], which
//     also accept the older 1.0.x spellings.
//
// The package imports only msp and the standard library, and builds for
// Linux and Windows.
//
// The sharp edge: everything here is visible to any local user who can read
// /var/log or query 127.0.0.1:3080. Never put key material, signatures or
// request bodies into a module message or a states value; the key latch
// reports the key's guid and incarnation only. And a status write must
// never be allowed to stop the agent: the Writer records its failures in
// monitorStatus and carries on.
package status
