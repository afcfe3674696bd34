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
//   - the agent owns one [Registry]: it sets each module's state there
//     ([Registry.Set]) from what the key latch, the eBPF redirector and the
//     proxy listener report, and the key latch's channel states from each
//     latched snapshot ([Registry.SetKeyLatchStates]);
//   - the agent runs a [Writer] and a [Provision] ([Provision.Run],
//     [Provision.StartTimer]); the proxy's listener serves the [Provision],
//     an http.Handler, at [msp.ProvisionPath], and at
//     [msp.AggregateStatusPath] the registry's [Registry.Snapshot] as
//     compact JSON ([AggregateStatus.MarshalCompact]), through a function
//     the agent gives it. [AggregateStatusHandler] serves the same JSON to
//     a caller that routes with net/http;
//   - for every proxied request the agent's audit sink calls
//     [Registry.CountRequest] and records the connection in
//     [Registry.Connections], and in [Registry.FailedAuthentications] when
//     the host refused it;
//   - the agent's status feed, not the key latch, selects on
//     [Provision.Notify] next to the latch's snapshots: a notify wakes the
//     latch and, while nothing is latched, calls [Provision.ResetKeyLatch];
//     each snapshot is passed on with [Provision.SetLatched];
//     [Provision.SetReady] is called as the redirector, the listener and
//     the latch come up;
//   - `--status` calls [WaitProvisioned] and exits with
//     [WaitResult.ExitCode], printing [WaitResult.Report];
//   - validators and tests read files with [Parse] or [ReadFile], which
//     also accept the older 1.0.x spellings.
//
// The package imports only msp, internal/httpwire (the --status client's
// wire code) and the standard library, and builds for Linux and Windows.
//
// The sharp edge: everything here is visible to any local user who can read
// /var/log or query 127.0.0.1:3080. Never put key material, signatures or
// request bodies into a module message or a states value; the key latch
// reports the key's guid and incarnation only. And a status write must
// never be allowed to stop the agent: the Writer records its failures in
// monitorStatus and carries on.
package status
