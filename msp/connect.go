package msp

import "net/netip"

// ConnectRecord is what the kernel recorded when a process connected to a
// protected endpoint: who connected and where it meant to go. The eBPF
// redirector writes it at connect() time; the proxy reads it for each
// connection it accepts to name the caller.
type ConnectRecord struct {
	// PID is the connecting process: the thread group id, as the initial
	// pid namespace sees it.
	PID uint32
	// UID and GID are the real user and group ids at connect() time.
	UID, GID uint32
	// Comm is the task's command name (at most 15 bytes, may be truncated;
	// use /proc/<PID>/exe for identity). Empty when the source does not
	// record it.
	Comm string
	// CgroupID is the cgroup v2 id (the cgroup directory's inode number),
	// 0 when unknown.
	CgroupID uint64
	// OriginalDst is where the process meant to connect before the
	// redirect, for example 169.254.169.254:80.
	OriginalDst netip.AddrPort
	// StartTime is when the process (its thread group leader) started, in
	// nanoseconds since boot; /proc/<PID>/stat field 22 is the same instant
	// in clock ticks. A later process given the same PID has another.
	// Zero when the source does not record it.
	StartTime uint64
	// ExecID is the process's exec generation: it changes on every execve,
	// so PID, StartTime and ExecID together name one program image of one
	// process. Only equality means anything. Zero when the source does not
	// record it.
	ExecID uint64
}

// Generation reports whether the record names the process's start time and
// exec generation, so that what /proc said about (PID, StartTime, ExecID)
// may be reused for it.
func (r ConnectRecord) Generation() bool { return r.StartTime != 0 && r.ExecID != 0 }

// IsRoot reports whether the caller ran as uid 0, upstream's is_root.
func (r ConnectRecord) IsRoot() bool { return r.UID == 0 }
