// Package agent is the whole MSP guest agent as a Go package: the eBPF
// redirect, the key latch, the authorizing and signing proxy, provisioning
// and status.json, and what upstream does on a VM besides (telemetry events
// to WireServer, AuthorizationRules snapshots in the log folder, serial
// console lines, CPUQuota=15% on its service after provisioning), wired
// together and run by
//
//	a, err := agent.New(cfg, opts)
//	err = a.Run(ctx)
//
// It is for security engineers who embed the agent in an agent of their
// own, and it is what the azure-proxy-agent program runs: that program only
// parses flags, reads upstream's configuration file into a [Config]
// ([LoadConfigFile], [ConfigFile.Config]) and serves --status.
//
// [Config] says what to run, in Go's types; [Options] holds the hooks, in
// the manner of httputil.ReverseProxy: an audit sink (an io.Writer or a
// callback per record), a prometheus.Registerer for the proxy's series, a
// logger, a dialer for the host endpoints and a caller resolver. An
// embedder who wants only to sign its own requests needs neither this
// package nor the proxy: see the signer-only example, which uses msp and
// keylatch alone.
//
// [Uninstall] takes an installed agent off a machine (the program's
// `uninstall` command and the packages' removal scripts call it): with
// Config.PinFolder the programs outlive the process, so it stops the
// service, detaches and unpins them, and purges keys only when status.json
// says MSP is disabled for the VM.
//
// The sharp edges. Run attaches eBPF programs to Config.CgroupPath, or to
// the root of the cgroup v2 hierarchy when it is empty, which redirects
// every process on the machine: tests and demos must give a child cgroup of
// their own. The key never leaves the key folder in clear text except to
// sign, and appears in no log, error or status. Run needs root: the key
// store refuses a folder others could read or plant files in.
package agent
