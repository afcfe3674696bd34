// SPDX-License-Identifier: (MIT OR GPL-2.0)

//go:build ignore

// Kernel half of the MSP redirect: rewrite connect() to protected host
// endpoints so it lands on the local proxy, and remember who made each
// redirected connection so the proxy can ask by source port.
//
// Map names and the layouts of the upstream structs (policy_map, audit_map)
// follow the Azure Guest Proxy Agent so tools that read those maps keep
// working. Everything else (gpa_exempt_map, gpa_sk_storage, gpa_caller_map
// and their structs) is ours. Upstream's skip_process_map is gone on
// purpose: it exempted a bare pid, which a later process can be given
// (docs/exemption.md).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#define GPA_IPPROTO_TCP 6

char __license[] SEC("license") = "Dual MIT/GPL";

// Upstream layout, 24 bytes. ip[0] holds an IPv4 address in network order;
// ip[1..3] are zero for IPv4. port holds htons(port) in its low 16 bits.
struct gpa_destination_entry {
	__u32 ip[4];
	__u32 port;
	__u32 protocol;
};

// Our exemption key, 4 bytes: the thread group id (the process id as the
// initial pid namespace sees it).
struct gpa_exempt_key {
	__u32 tgid;
};

// Our exemption value, 8 bytes: when that process started, in clock ticks
// since boot, the number in field 22 of /proc/<pid>/stat. A later process
// given the same pid started later, so it does not match.
struct gpa_exemption {
	__u64 start_ticks;
};

// Only the fields we read, relocated against the running kernel's BTF
// (CO-RE), so no kernel headers are needed at build time. self_exec_id is
// a u64 since Linux 5.7; hostcheck requires 5.15.
struct task_struct {
	struct task_struct *group_leader;
	__u64 start_boottime;
	__u64 self_exec_id;
} __attribute__((preserve_access_index));

// The kernel reports start times to userspace as nsec_to_clock_t(ns),
// which is ns / (NSEC_PER_SEC / USER_HZ); USER_HZ is 100 on every
// architecture this package builds for (the loader checks AT_CLKTCK).
#define GPA_NSEC_PER_TICK 10000000ULL

// Upstream layout, 8 bytes. source_port is the local port in host order.
struct gpa_audit_key {
	__u32 protocol;
	__u32 source_port;
};

// Upstream layout, 20 bytes.
struct gpa_audit_event {
	__u32 logon_id;
	__u32 process_id;
	__u32 is_root;
	__u32 destination_ipv4;
	__u32 destination_port;
};

// Our key for caller records, 12 bytes: upstream's key plus the client's
// local IPv4 address (network order), so a process that binds another
// loopback address to the same port cannot pick up someone else's record.
struct gpa_caller_key {
	__u32 protocol;
	__u32 source_port;
	__u32 source_ip4;
};

// Our extended caller record, 64 bytes. Addresses and ports use the same
// encoding as gpa_destination_entry. start_boottime (ns since boot) and
// exec_id (self_exec_id, which every execve increments) are the thread
// group leader's: with tgid they name one program image of one process, so
// the proxy can cache what /proc says about it. A later process given the
// same pid started later; an exec changes exec_id.
struct gpa_caller_record {
	__u64 cgroup_id;
	__u32 uid;
	__u32 gid;
	__u32 tgid;
	__u32 destination_ipv4;
	__u32 destination_port;
	__u32 protocol;
	char comm[16];
	__u64 start_boottime;
	__u64 exec_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10);
	__type(key, struct gpa_destination_entry);
	__type(value, struct gpa_destination_entry);
} policy_map SEC(".maps");

// Processes whose connections are never redirected: the agent itself, so
// its upstream connections reach the host. The loader removes entries of
// processes that are gone at every start, so it holds one entry per live
// agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct gpa_exempt_key);
	__type(value, struct gpa_exemption);
} gpa_exempt_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 200);
	__type(key, struct gpa_audit_key);
	__type(value, struct gpa_audit_event);
} audit_map SEC(".maps");

// Connect-time caller, stored on the socket itself. The kernel frees it
// with the socket, so getpeername can find the original destination for the
// whole connection, and a socket that was never redirected has no storage:
// looking it up costs next to nothing, which keeps unprotected connects
// fast.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct gpa_caller_record);
} gpa_sk_storage SEC(".maps");

// Connect-time caller by {protocol, local port, local address}: what the
// proxy reads (and deletes) when it accepts the connection.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct gpa_caller_key);
	__type(value, struct gpa_caller_record);
} gpa_caller_map SEC(".maps");

// exempt reports whether the calling process is the one that exempted
// itself: same tgid and same start time. The start time is the thread
// group leader's, since any thread of the agent may connect. A failed read
// gives 0, which no exemption holds, so it fails closed (redirected).
static __always_inline int
exempt(void)
{
	struct gpa_exempt_key key = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};
	struct gpa_exemption *ex = bpf_map_lookup_elem(&gpa_exempt_map, &key);
	if (!ex)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 start = BPF_CORE_READ(task, group_leader, start_boottime);
	return start / GPA_NSEC_PER_TICK == ex->start_ticks;
}

// redirect_target returns the proxy address for a protected IPv4
// destination, or NULL when the destination is not protected or the calling
// process is exempt.
static __always_inline struct gpa_destination_entry *
redirect_target(__u32 ip4, __u32 port, __u32 protocol)
{
	struct gpa_destination_entry key = {};
	key.ip[0] = ip4;
	key.port = port;
	key.protocol = protocol;

	struct gpa_destination_entry *target = bpf_map_lookup_elem(&policy_map, &key);
	if (!target)
		return NULL;

	if (exempt())
		return NULL;
	return target;
}

// remember_caller records the calling task on the socket. A failure here
// is not fatal: the connection is still redirected and the proxy, finding
// no record, refuses it (fail closed).
static __always_inline void
remember_caller(struct bpf_sock_addr *ctx, __u32 ip4, __u32 port, __u32 protocol)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct gpa_caller_record *rec =
		bpf_sk_storage_get(&gpa_sk_storage, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rec)
		return;

	__u64 uid_gid = bpf_get_current_uid_gid();
	rec->cgroup_id = bpf_get_current_cgroup_id();
	rec->uid = (__u32)uid_gid;
	rec->gid = (__u32)(uid_gid >> 32);
	rec->tgid = bpf_get_current_pid_tgid() >> 32;
	rec->destination_ipv4 = ip4;
	rec->destination_port = port;
	rec->protocol = protocol;
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));

	// A failed read leaves 0, which the proxy takes as "not recorded" and
	// never caches on.
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	rec->start_boottime = BPF_CORE_READ(leader, start_boottime);
	rec->exec_id = BPF_CORE_READ(leader, self_exec_id);
}

// redirected returns the record of a redirected socket, or NULL.
static __always_inline struct gpa_caller_record *
redirected(struct bpf_sock *sk)
{
	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&gpa_sk_storage, sk, 0, 0);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	__u32 ip4 = ctx->user_ip4;
	__u32 port = ctx->user_port;
	__u32 protocol = ctx->protocol;

	struct gpa_destination_entry *target = redirect_target(ip4, port, protocol);
	if (!target)
		return 1;

	remember_caller(ctx, ip4, port, protocol);
	ctx->user_ip4 = target->ip[0];
	ctx->user_port = target->port;
	return 1;
}

// An AF_INET6 socket may dial an IPv4 endpoint as ::ffff:a.b.c.d. Redirect
// those exactly like connect4, keeping the mapped form so the socket stays
// valid for its family.
SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->user_ip6[0] != 0 || ctx->user_ip6[1] != 0 ||
	    ctx->user_ip6[2] != bpf_htonl(0x0000ffff))
		return 1;

	__u32 ip4 = ctx->user_ip6[3];
	__u32 port = ctx->user_port;
	__u32 protocol = ctx->protocol;

	struct gpa_destination_entry *target = redirect_target(ip4, port, protocol);
	if (!target)
		return 1;

	remember_caller(ctx, ip4, port, protocol);
	ctx->user_ip6[3] = target->ip[0];
	ctx->user_port = target->port;
	return 1;
}

// Report the dialled address, not the proxy, so the redirect is invisible to
// applications that check their peer.
SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	struct gpa_caller_record *rec = redirected(ctx->sk);
	if (!rec)
		return 1;
	ctx->user_ip4 = rec->destination_ipv4;
	ctx->user_port = rec->destination_port;
	return 1;
}

SEC("cgroup/getpeername6")
int getpeername6(struct bpf_sock_addr *ctx)
{
	struct gpa_caller_record *rec = redirected(ctx->sk);
	if (!rec)
		return 1;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
	ctx->user_ip6[3] = rec->destination_ipv4;
	ctx->user_port = rec->destination_port;
	return 1;
}

// connect_audit runs when TCP sends the SYN (the local port is chosen by
// then) and moves the connect-time record to keys the proxy can compute from
// the accepted connection: {protocol, client port} for upstream's audit_map
// and {protocol, client port, client address} for ours.
SEC("sockops")
int connect_audit(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	struct gpa_caller_record *rec = redirected(skops->sk);
	if (!rec)
		return 1;

	struct gpa_audit_key key = {
		.protocol = rec->protocol,
		.source_port = skops->local_port,
	};
	struct gpa_caller_key ckey = {
		.protocol = rec->protocol,
		.source_port = skops->local_port,
		.source_ip4 = skops->local_ip4,
	};
	struct gpa_audit_event ev = {
		.logon_id = rec->uid,
		.process_id = rec->tgid,
		.is_root = rec->uid == 0,
		.destination_ipv4 = rec->destination_ipv4,
		.destination_port = rec->destination_port,
	};
	bpf_map_update_elem(&gpa_caller_map, &ckey, rec, BPF_ANY);
	bpf_map_update_elem(&audit_map, &key, &ev, BPF_ANY);
	return 1;
}
