// Package ebpf is the kernel half of the Metadata Security Protocol guest
// agent: eBPF programs that send every TCP connect() to a protected host
// endpoint (WireServer, IMDS, HostGAPlugin) to the local proxy instead, and
// let the proxy ask, for each connection it accepts, which process made it.
//
// The intended caller is the agent (and the proxy package): it calls Load
// once with the root of the cgroup v2 hierarchy (CgroupV2Root), exempts its
// own process (ExemptSelf) so its upstream connections are not looped back,
// programs the redirect policy from the latched state, and on every accepted
// connection calls Audit().LookupAndDelete with the client's port.
//
//	r, err := ebpf.Load(ctx, ebpf.Options{CgroupPath: root})
//	...
//	defer r.Close()
//	r.ExemptSelf()
//	r.Policy().Set(msp.IMDSAddr, msp.ProxyAddr)
//	rec, err := r.Audit().LookupAndDelete(clientAddrPort)
//
// # Programs
//
// All programs attach to one cgroup (and so cover its descendants) through
// bpf_link, and are written in C (redirect.c), compiled by bpf2go; the
// generated object is committed, so building needs no clang.
//
//   - cgroup/connect4 looks the destination up in policy_map; if it is
//     protected and the caller's process is not exempt, it
//     records the caller (tgid, uid, gid, comm, cgroup id, original
//     destination) in the socket's own storage and rewrites the destination.
//   - cgroup/connect6 does the same for IPv4-mapped IPv6 destinations
//     (::ffff:169.254.169.254), so an AF_INET6 socket is no way around the
//     agent.
//   - a cgroup sock_ops program, on BPF_SOCK_OPS_TCP_CONNECT_CB, moves the
//     record to keys the proxy can compute: {TCP, local port, local
//     address} in gpa_caller_map (ours, full record) and {TCP, local port}
//     in audit_map (upstream's layout).
//   - cgroup/getpeername4 and getpeername6 report the original destination,
//     so the redirect is invisible to the application.
//
// Upstream uses a kprobe on tcp_connect for the audit step. This package
// uses sock_ops instead, because it is a stable attach point: the context
// gives the local port and the socket without reading struct sock
// at kernel-version-dependent offsets (no CO-RE, no vmlinux.h), it fires
// only for sockets in the attached cgroup rather than for every TCP connect
// on the machine, it runs at the same moment (the port is chosen, the SYN
// not yet sent, so the record exists before the proxy can accept), and it
// is a cgroup program like the others, detached by the same links. It also
// needs no kernel-tracing permission: on the machine this package was
// built on (Linux 6.18, kernel lockdown forced to integrity, no
// CONFIG_KPROBES) fentry programs fail to load with EPERM and kprobes do
// not exist, while cgroup programs work. The
// price is that the kernel calls a sock_ops program on several TCP events
// per connection (about five for a client connect), each returning at once
// unless it is the connect callback; BenchmarkConnectSlowdown measures the
// total.
//
// # Maps and compatibility
//
// policy_map and audit_map keep upstream's names, types,
// sizes and struct layouts (docs/protocol.md §5.2: u32 fields in host byte
// order, addresses and ports in network order, the audit key's port in host
// order), so tools that read them keep working. Our own data lives in:
//
//   - gpa_exempt_map, tgid → start time in clock ticks: the processes
//     (the agent) whose connections are not redirected. It replaces
//     upstream's skip_process_map, which exempted a bare pid that a later
//     process could be given (docs/exemption.md).
//   - gpa_sk_storage, socket-local storage holding the caller record. The
//     kernel frees it with the socket, so getpeername works for the whole
//     connection, and a socket that was never redirected costs only an
//     empty lookup.
//   - gpa_caller_map, LRU, struct gpa_caller_key → record. The key (12
//     bytes) is upstream's audit key plus the client's IPv4 address, so a
//     process that binds another loopback address to a caller's port and
//     dials the proxy directly cannot claim the caller's record.
//
// The record is struct gpa_caller_record (48 bytes: u64 cgroup_id; u32 uid,
// gid, tgid, destination_ipv4, destination_port, protocol; char comm[16]).
// Only IPv4 destinations and proxies are supported, as upstream.
//
// # Pinning
//
// With Options.PinPath (a bpffs directory), maps and links are pinned;
// Close then leaves everything in force and the next Load swaps the new
// programs into the existing links atomically and reuses the maps, so a
// restarting agent leaves no moment in which connections bypass it.
// RemovePins takes it all down. Without PinPath nothing survives Close.
//
// # Requirements and errors
//
// Load first checks Linux 5.15 or later, cgroup2 in /proc/filesystems and
// mounted (found in /proc/self/mountinfo), BTF in /sys/kernel/btf/vmlinux,
// and the sock_addr and sock_ops program types (cilium/ebpf's features
// package); CheckKernel runs the same checks alone. Failures are typed:
// *RequirementError (errors.Is ErrKernelTooOld, ErrNoCgroup2, ErrNoBTF,
// ErrNotSupported) with the remediation, *CgroupError ("Failed to open
// cgroup '<path>' with error: ..."), *ProgramError ("Failed to load program
// 'connect4' with error: ..." carrying the verifier log, or "Failed to
// attach program ..."), and *MapError. Their texts match the MSP
// troubleshooting guide.
//
// The package builds on little-endian Linux only (the object is compiled
// for bpfel); elsewhere it is empty.
//
// # The sharp edge
//
// Attaching to the cgroup v2 root redirects every process on the machine,
// including, unless it exempted itself, the agent itself. Only the
// agent does that. Tests and experiments must create a child cgroup, place
// only their own subprocesses in it, and attach there; the tests in this
// package do exactly that and dial only loopback addresses. Keep the
// Redirector referenced for as long as redirection must last: without
// pinning, closing it (or letting the process exit) detaches everything.
package ebpf
