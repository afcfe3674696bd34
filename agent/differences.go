package agent

import "log/slog"

// Difference is one deliberate departure from upstream's behaviour, with
// the reason for it. The README's "differences from upstream" table says
// the same.
type Difference struct {
	What, Why string
}

// Differences lists where the agent, given upstream's files, deliberately
// does not do what upstream does. Run logs them once at start.
func Differences() []Difference {
	return []Difference{
		{"a request target with no canonical form (overlong UTF-8, a bad escape, NUL, an encoded '?' in the path) is refused with 400 under every matcher, legacy included",
			"upstream's legacy matcher decodes such targets lossily (or reads %3F as a query) and can forward them to the host"},
		{"with neither matcher nor canonicalRequestMode in the config, the canonical matcher decides",
			"segment-aware matching: upstream's string prefix lets rule /test match /test-evil"},
		{"pollKeyStatusIntervalInSeconds 0 polls every 15 s",
			"upstream would poll the host without pause"},
		{"an empty latchKeyFolder, a non-loopback listenAddress or an unknown matcher stops the agent at start, naming the key",
			"keys in the working directory or a proxy reachable from other machines are unsafe; upstream panics on a bad file at first use instead"},
		{"a local rules file or folder writable by group or others is refused and its endpoint fails closed",
			"anyone who can write it can grant themselves access"},
		{"--status prints Go's error text after \"with error:\"; the rest of its stdout is upstream's, our hints go to stderr",
			"the error comes from our HTTP client, not hyper"},
		{"the agent is exempt from its own redirect by pid and process start time, and only a live agent keeps an entry",
			"a bare pid outlives the agent: a process given a dead agent's pid bypassed the proxy, and nine restarts filled the pinned skip list"},
		{"after a restart the stored key, modes and rules apply until the host answers; a request to an endpoint last known in Enforce without a key gets 503 with Retry-After",
			"upstream forwards requests unsigned until its first key-status poll succeeds"},
		{"a key folder owned by another user is refused; a key file group or others could read is not used and a new key is requested",
			"their content may have been planted or read; upstream changes the owner and uses them"},
		{"telemetry posts are signed with the latched key",
			"one signing path for everything the agent sends to WireServer; the host accepts the post signed or not"},
		{"CPUQuota=15% is set only when the agent's own cgroup is the azure-proxy-agent service",
			"an agent started from a test or another unit must never throttle the service"},
		{"a caller's exe and command line are read from /proc once per process image (pid, start time, exec generation); a process that rewrites its argv without exec keeps the command line first read",
			"six system calls per connection for a process that opens many; exe and identity cannot change without an exec, which misses the cache"},
	}
}

// logDifferences writes Differences to the log once.
func logDifferences(logger *slog.Logger) {
	for _, d := range Differences() {
		logger.Info("differs from upstream: "+d.What, "why", d.Why)
	}
}
