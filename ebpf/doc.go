// Package ebpf is the kernel half of the Metadata Security Protocol guest
// agent: eBPF programs that send every TCP connect() to a protected host
// endpoint (WireServer, IMDS, HostGAPlugin) to the local proxy instead, and
// let the proxy ask, for each connection it accepts, which process made it.
//
// The intended caller is the agent. It calls Load once with the root of the
// cgroup v2 hierarchy (CgroupV2Root) and, usually, a pin folder; exempts its
// own process (ExemptSelf) so its upstream connections reach the host; hands
// Policy() to the key latch, which programs the redirect from the latched
// state (PolicyMap is a keylatch.RedirectPolicy); and hands Audit() to the
// proxy, which looks up the accepted connection's client address
// (AuditMap is a proxy.AuditLookup and returns msp.ConnectRecord).
//
//	r, err := ebpf.Load(ctx, ebpf.Options{CgroupPath: root, PinPath: pins})
//	if err != nil { ... } // *RequirementError, *CgroupError, *ProgramError, *MapError
//	defer r.Close()
//	err = r.ExemptSelf()
//	err = r.Policy().SetRedirect(ctx, []msp.Endpoint{msp.EndpointIMDS})
//	rec, err := r.Audit().LookupAndDelete(clientAddrPort) // netip.AddrPort of the accepted conn
//
// CheckKernel tells early whether the machine can run the redirector;
// package hostcheck gives the file-based part of that verdict, which
// msp-validate shows too.
//
// # Pinning
//
// With Options.PinPath (a directory on a bpffs mount), maps and links are
// pinned. Close then leaves the redirect in force, and the next Load swaps
// its programs into the pinned links and reuses the maps, so a restarting
// agent leaves no moment in which connections bypass it. Pins left by an
// older version are taken over the same way (map and program names do not
// change; the maps of connections in flight are replaced if their layout
// changed); RemovePins takes everything down. Without PinPath nothing
// survives Close.
//
// The exemption survives nothing: it names the process by pid and start
// time, Close removes it, and Load removes those of processes that are gone,
// so a later process given a dead agent's pid is redirected like any other
// (docs/exemption.md).
//
// The package builds on little-endian Linux only (the object is compiled
// for bpfel); elsewhere it is empty. How the programs are built and why
// they look as they do is in docs/ebpf-build.md.
//
// # The sharp edge
//
// Attaching to the cgroup v2 root redirects every process on the machine,
// including the agent itself until it calls ExemptSelf. Only the agent does
// that. Tests and experiments must create a child cgroup, place only their
// own subprocesses in it, and attach there; the tests in this package do
// exactly that and dial only loopback addresses. Keep the Redirector
// referenced for as long as redirection must last: without pinning, closing
// it (or letting the process exit) detaches everything.
package ebpf
