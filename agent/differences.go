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
	}
}

// logDifferences writes Differences to the log once.
func logDifferences(logger *slog.Logger) {
	for _, d := range Differences() {
		logger.Info("differs from upstream: "+d.What, "why", d.Why)
	}
}
