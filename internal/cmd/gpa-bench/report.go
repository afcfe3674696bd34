package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// results is everything one run measured.
type results struct {
	machine        string
	binarySize     int64
	startups       []time.Duration
	rssIdle        int64
	rssWarm        int64 // after the first soak chunk
	rssSoak        int64 // after the last
	soakRequests   int64
	soakErrors     int64
	soakBadSigs    int64
	soakTime       time.Duration
	connectWith    float64
	connectWithout float64
	// Connects per CPU-second of the connecting process.
	connectWithCPU, connectWithoutCPU float64
	// bpfPerConnect is the kernel's run time of our programs per connect.
	bpfPerConnect time.Duration
	cells         []*cellResult
}

// The goals of issues 9 and 22.
const (
	// goalCPUOverRelay bounds the agent's proxy CPU per request against
	// the relay's in the same row; goalCPUStretch is issue 22's stretch,
	// shown but not judged.
	goalCPUOverRelay = 1.3
	goalCPUStretch   = 1.15
	// goalRateOverNginx is the least share of plain nginx's request rate
	// the agent serves in the same row.
	goalRateOverNginx = 0.85
	// goalP50OverNginx bounds the agent's p50 added over direct against
	// nginx's, at one keep-alive client.
	goalP50OverNginx = 1.25
	goalAddedP99     = 250 * time.Microsecond
	goalRSSIdle      = 15 << 20
	goalRSSLoad      = 40 << 20
	goalRSSGrowth    = 0.10
	goalStartup      = 150 * time.Millisecond
	goalConnectSlow  = 0.03
	goalBinarySize   = 10 << 20
	goalSignedPerRow = 0
)

// goal is one line of the goals table.
type goal struct {
	name, want, got string
	ok              bool
}

func (r *results) find(target string, m cellMode) *cellResult {
	for _, c := range r.cells {
		if c.target == target && c.mode == m {
			return c
		}
	}
	return nil
}

// roundSpread returns the lowest and highest ratio of a's rate to b's in
// the same round, when both pooled the same number of rounds, more than
// one.
func roundSpread(a, b *cellResult) (lo, hi float64, ok bool) {
	ar, br := a.roundRates(), b.roundRates()
	if len(ar) < 2 || len(ar) != len(br) {
		return 0, 0, false
	}
	for i := range ar {
		if br[i] <= 0 {
			return 0, 0, false
		}
		r := ar[i] / br[i]
		if i == 0 || r < lo {
			lo = r
		}
		if i == 0 || r > hi {
			hi = r
		}
	}
	return lo, hi, true
}

// goals evaluates the measured values against the issues' goals. Goals
// whose inputs were not measured (no relay row; no nginx rows with
// -no-nginx) are left out; a goal whose rows are there but whose figure
// cannot be read from them (no CPU, no requests) is missed, so that a
// broken run never passes.
func (r *results) goals() []goal {
	var gs []goal
	for _, m := range cellModes {
		if a, rl := r.find(targetAgent, m), r.find(targetRelay, m); a != nil && rl != nil {
			gs = append(gs, cpuGoal(m, a, rl))
		}
	}
	for _, m := range cellModes {
		if a, n := r.find(targetAgent, m), r.find(targetNginx, m); a != nil && n != nil {
			gs = append(gs, rateGoal(m, a, n))
		}
	}
	one := cellMode{1, false}
	if a, n, d := r.find(targetAgent, one), r.find(targetNginx, one), r.find(targetDirect, one); a != nil && n != nil && d != nil {
		gs = append(gs, p50Goal(a, n, d))
	}
	if a, d := r.find(targetAgent, one), r.find(targetDirect, one); a != nil && d != nil {
		added := a.load.Latencies.quantile(0.99) - d.load.Latencies.quantile(0.99)
		gs = append(gs, goal{"p99 added over direct, 1 client", "≤ " + goalAddedP99.String(), fmtDur(added), added <= goalAddedP99})
	}
	var maxLoad int64
	var unsigned int
	for _, c := range r.cells {
		if c.target == targetAgent {
			maxLoad = max(maxLoad, c.maxRSS)
			unsigned += c.badSigs
		}
	}
	if r.rssIdle > 0 {
		gs = append(gs, goal{"agent RSS idle", "≤ 15 MB", fmt.Sprintf("%.1f MB", mb(r.rssIdle)), r.rssIdle <= goalRSSIdle})
	}
	if maxLoad > 0 {
		gs = append(gs, goal{"agent RSS under load (max)", "≤ 40 MB", fmt.Sprintf("%.1f MB", mb(maxLoad)), maxLoad <= goalRSSLoad})
	}
	if r.soakRequests > 0 && r.rssWarm > 0 {
		growth := float64(r.rssSoak)/float64(r.rssWarm) - 1
		gs = append(gs, goal{fmt.Sprintf("RSS growth over %d requests", r.soakRequests), "≤ 10%",
			fmt.Sprintf("%+.1f%% (%.1f → %.1f MB)", 100*growth, mb(r.rssWarm), mb(r.rssSoak)), growth <= goalRSSGrowth})
		gs = append(gs, goal{"soak requests failed or not 200", "0", fmt.Sprint(r.soakErrors), r.soakErrors == 0})
		unsigned += int(r.soakBadSigs)
	}
	gs = append(gs, goal{"IMDS requests through the agent reaching the host without a valid signature", "0", fmt.Sprint(unsigned), unsigned == goalSignedPerRow})
	if len(r.startups) > 0 {
		s := slices.Clone(r.startups)
		slices.Sort(s)
		worst := s[len(s)-1]
		gs = append(gs, goal{fmt.Sprintf("exec → SUCCESS, key latched (worst of %d)", len(s)), "≤ " + goalStartup.String(),
			fmt.Sprintf("%v (median %v)", fmtDur(worst), fmtDur(s[len(s)/2])), worst <= goalStartup})
	}
	if r.connectWithoutCPU > 0 {
		// The measured difference is within the noise of a shared machine;
		// the time the kernel reports inside our programs is not, and it is
		// what a connect pays extra. The goal is judged on that share.
		plain := time.Duration(float64(time.Second) / r.connectWithoutCPU)
		share := float64(r.bpfPerConnect) / float64(plain)
		measured := 1 - r.connectWithCPU/r.connectWithoutCPU
		gs = append(gs, goal{"connect() slowdown, unprotected destination", "≤ 3%",
			fmt.Sprintf("%.1f%% in our programs (%d ns of a %d ns connect); measured per CPU-second %+.1f%%, wall clock %.0f/s vs %.0f/s",
				100*share, r.bpfPerConnect.Nanoseconds(), plain.Nanoseconds(), 100*measured, r.connectWith, r.connectWithout),
			share <= goalConnectSlow})
	}
	if r.binarySize > 0 {
		gs = append(gs, goal{"stripped agent binary", "≤ 10 MB", fmt.Sprintf("%.1f MB", mb(r.binarySize)), r.binarySize <= goalBinarySize})
	}
	return gs
}

// ratio2 rounds a ratio to the two decimals the tables print: a ratio
// goal is judged on the figure the reader sees, so that a printed 1.30×
// is never missed against ≤ 1.3×. The rounding is far below the noise.
func ratio2(x float64) float64 { return math.Round(x*100) / 100 }

// cpuPerRequest is the proxy's pooled CPU per request in µs; zero when no
// request was served or no CPU was read (/proc counts in 10 ms ticks).
func (c *cellResult) cpuPerRequest() float64 { return 100 * c.perTenK(c.proxyCPU) }

// cpuGoal judges the agent's CPU per request against the relay's in the
// same row (issue 22): the relay does the least a Go proxy does, so the
// ratio is what the agent's own work costs, whatever the machine's speed.
func cpuGoal(m cellMode, a, relay *cellResult) goal {
	g := goal{name: "agent CPU per request against go relay's, " + m.String(),
		want: fmt.Sprintf("≤ %v× (stretch ≤ %v×)", goalCPUOverRelay, goalCPUStretch)}
	ac, rc := a.cpuPerRequest(), relay.cpuPerRequest()
	if ac <= 0 || rc <= 0 {
		// Serving requests takes CPU: a zero is a reading that failed
		// or a row that served nothing, and a ratio of it judges nothing.
		g.got = fmt.Sprintf("not measured (agent %.1f µs, relay %.1f µs)", ac, rc)
		return g
	}
	ratio := ratio2(ac / rc)
	stretch := "stretch met"
	if ratio > goalCPUStretch {
		stretch = "stretch missed"
	}
	g.got = fmt.Sprintf("%.2f× (%s): %.1f against %.1f µs", ratio, stretch, ac, rc)
	g.ok = ratio <= goalCPUOverRelay
	return g
}

// rateGoal judges the agent's pooled request rate against plain nginx's
// in the same row, with the range of the ratio round by round: the same
// round of both ran back to back, so that range is the noise the pooled
// ratio carries.
func rateGoal(m cellMode, a, nginx *cellResult) goal {
	nr := nginx.load.Rate()
	g := goal{name: "throughput against nginx, " + m.String(),
		want: fmt.Sprintf("≥ %v× (%.0f req/s)", goalRateOverNginx, goalRateOverNginx*nr)}
	if nr <= 0 {
		g.got = fmt.Sprintf("%.0f req/s; nginx served none: no ratio", a.load.Rate())
		return g
	}
	ratio := ratio2(a.load.Rate() / nr)
	g.got = fmt.Sprintf("%.0f req/s, %.2f×", a.load.Rate(), ratio)
	if lo, hi, ok := roundSpread(a, nginx); ok {
		g.got += fmt.Sprintf("; by round %.2f× to %.2f×", lo, hi)
	}
	g.ok = ratio >= goalRateOverNginx
	return g
}

// p50Goal judges what the agent adds to direct's p50 at one keep-alive
// client against what nginx adds, from the pooled latencies.
func p50Goal(a, nginx, direct *cellResult) goal {
	g := goal{name: "p50 added over direct, 1 client"}
	for _, c := range []*cellResult{a, nginx, direct} {
		if c.load.Latencies == nil || c.load.Latencies.Total == 0 {
			g.want = fmt.Sprintf("≤ %v× nginx's", goalP50OverNginx)
			g.got = "not measured (" + c.target + " has no latencies)"
			return g
		}
	}
	p50 := func(c *cellResult) time.Duration { return c.load.Latencies.quantile(0.5) }
	added, nginxAdded := p50(a)-p50(direct), p50(nginx)-p50(direct)
	if nginxAdded <= 0 {
		// A proxy cannot answer sooner than the host behind it: nginx at
		// or below direct is noise or a broken row, and no multiple of it
		// is a bound. The bound is taken as zero, met only by an agent
		// that adds nothing either; rerun to judge.
		g.want = fmt.Sprintf("≤ %v× nginx's (≤ 0 µs)", goalP50OverNginx)
		g.got = fmt.Sprintf("agent %s, nginx %s: nginx not above direct, bound 0", fmtAdded(added), fmtAdded(nginxAdded))
		g.ok = added <= 0
		return g
	}
	ratio := ratio2(float64(added) / float64(nginxAdded))
	g.want = fmt.Sprintf("≤ %v× nginx's (≤ %s)", goalP50OverNginx, fmtDur(time.Duration(goalP50OverNginx*float64(nginxAdded))))
	g.got = fmt.Sprintf("%.2f×: agent %s, nginx %s", ratio, fmtAdded(added), fmtAdded(nginxAdded))
	g.ok = ratio <= goalP50OverNginx
	return g
}

// fmtAdded prints a latency difference with its sign.
func fmtAdded(d time.Duration) string {
	if d >= 0 {
		return "+" + fmtDur(d)
	}
	return fmtDur(d)
}

// comparison is one line of the comparisons table.
type comparison struct{ name, clients, ratio string }

// comparisons are the relay's rate against nginx's and the agent's
// against the relay's, per client count, with their round-by-round range,
// then the agent's proxy CPU per request against the relay's: what the
// forwarding alone reaches here, and what the agent's work costs on top of
// it. Not goals (the CPU ratio is also one, in the goals table).
func (r *results) comparisons() []comparison {
	var cs []comparison
	for _, pair := range [][2]string{{targetRelay, targetNginx}, {targetAgent, targetRelay}} {
		for _, m := range cellModes {
			a, b := r.find(pair[0], m), r.find(pair[1], m)
			if a == nil || b == nil || b.load.Rate() <= 0 {
				continue
			}
			got := fmt.Sprintf("%.0f %%", 100*a.load.Rate()/b.load.Rate())
			if lo, hi, ok := roundSpread(a, b); ok {
				got += fmt.Sprintf(" (by round %.0f to %.0f %%)", 100*lo, 100*hi)
			}
			cs = append(cs, comparison{pair[0] + " / " + pair[1] + ", req/s", m.String(), got})
		}
	}
	for _, m := range cellModes {
		a, b := r.find(targetAgent, m), r.find(targetRelay, m)
		if a == nil || b == nil || a.cpuPerRequest() <= 0 || b.cpuPerRequest() <= 0 {
			continue
		}
		cs = append(cs, comparison{targetAgent + " / " + targetRelay + ", proxy CPU per request", m.String(),
			fmt.Sprintf("%.2f× (%.1f / %.1f µs)", a.cpuPerRequest()/b.cpuPerRequest(), a.cpuPerRequest(), b.cpuPerRequest())})
	}
	return cs
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond || d <= -time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}

// markdown renders both tables.
func (r *results) markdown(o *options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s.\n\n", time.Now().UTC().Format("2006-01-02"), r.machine)
	fmt.Fprintf(&b, "Each cell pools %d rounds of %v, run in turn with the other targets of its clients; the load generator, the proxies and msptest share the machine's CPUs. The go relay row is the least a Go proxy does (no identification, authorization, signing, audit or metrics): the agent's proxy CPU per request is judged against it, and its rate is a comparison.", o.rounds, o.duration)
	if o.fastIMDS {
		b.WriteString(" IMDS answered with a fixed 200-byte document (msptest SetHandler), so the proxies are what is compared.")
	}
	b.WriteString("\n\n")
	b.WriteString("| target | clients | req/s | p50 | p99 | p99.9 | proxy CPU s/10k | host CPU s/10k | client CPU s/10k | errors |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range r.cells {
		l := c.load
		proxy := "-"
		if c.target != targetDirect {
			proxy = fmt.Sprintf("%.3f", c.perTenK(c.proxyCPU))
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %.3f | %.3f | %d |\n", c.target, c.mode, l.Rate(),
			fmtDur(l.Latencies.quantile(0.5)), fmtDur(l.Latencies.quantile(0.99)), fmtDur(l.Latencies.quantile(0.999)),
			proxy, c.perTenK(c.hostCPU), c.perTenK(c.loadCPU), l.Errors+l.NonOK)
	}
	b.WriteString("\n| goal | target | measured | |\n|---|---|---|---|\n")
	for _, g := range r.goals() {
		mark := "met"
		if !g.ok {
			mark = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.name, g.want, g.got, mark)
	}
	if cs := r.comparisons(); len(cs) > 0 {
		b.WriteString("\n| comparison, not a goal | clients | ratio |\n|---|---|---|\n")
		for _, c := range cs {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c.name, c.clients, c.ratio)
		}
	}
	return b.String()
}

// The README section gpa-bench rewrites.
const (
	readmeBegin = "<!-- gpa-bench:begin -->"
	readmeEnd   = "<!-- gpa-bench:end -->"
)

var errNoMarkers = errors.New("gpa-bench: README has no " + readmeBegin + " / " + readmeEnd + " markers")

// spliceReadme replaces what lies between the markers with report.
func spliceReadme(doc []byte, report string) ([]byte, error) {
	i := bytes.Index(doc, []byte(readmeBegin))
	j := bytes.Index(doc, []byte(readmeEnd))
	if i < 0 || j < i {
		return nil, errNoMarkers
	}
	var out bytes.Buffer
	out.Write(doc[:i+len(readmeBegin)])
	out.WriteString("\n")
	out.WriteString(report)
	out.Write(doc[j:])
	return out.Bytes(), nil
}

func writeReadme(path, report string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := spliceReadme(doc, report)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}
