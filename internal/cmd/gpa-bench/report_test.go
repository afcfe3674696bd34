package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// goalRow is a goal with exported fields, for cmp.
type goalRow struct {
	Name, Want, Got string
	OK              bool
}

// goalRows returns the goals of r whose name starts with prefix.
func goalRows(r *results, prefix string) []goalRow {
	var rows []goalRow
	for _, g := range r.goals() {
		if strings.HasPrefix(g.name, prefix) {
			rows = append(rows, goalRow{g.name, g.want, g.got, g.ok})
		}
	}
	return rows
}

// cpuCell is a cell of 10,000 requests in one second whose proxy used
// usPerReq µs of CPU per request.
func cpuCell(target string, m cellMode, usPerReq float64) *cellResult {
	c := cellOf(target, m, 10_000, time.Millisecond)
	c.proxyCPU = time.Duration(usPerReq * 10_000 * float64(time.Microsecond))
	return c
}

// TestCPUGoal: the agent's CPU per request against the relay's in the
// same row, met up to 1.3× as printed, the stretch named in the text, and
// missed when either CPU could not be read.
func TestCPUGoal(t *testing.T) {
	ka, nc := cellMode{8, false}, cellMode{8, true}
	want := "≤ 1.3× (stretch ≤ 1.15×)"
	for _, tt := range []struct {
		name  string
		cells []*cellResult
		want  []goalRow
	}{{
		name:  "stretch met",
		cells: []*cellResult{cpuCell(targetAgent, ka, 23), cpuCell(targetRelay, ka, 20)},
		want:  []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "1.15× (stretch met): 23.0 against 20.0 µs", true}},
	}, {
		name:  "at the goal, stretch missed",
		cells: []*cellResult{cpuCell(targetAgent, ka, 26), cpuCell(targetRelay, ka, 20)},
		want:  []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "1.30× (stretch missed): 26.0 against 20.0 µs", true}},
	}, {
		name:  "judged as printed: 1.304 is 1.30×",
		cells: []*cellResult{cpuCell(targetAgent, ka, 26.08), cpuCell(targetRelay, ka, 20)},
		want:  []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "1.30× (stretch missed): 26.1 against 20.0 µs", true}},
	}, {
		name:  "over",
		cells: []*cellResult{cpuCell(targetAgent, ka, 26.2), cpuCell(targetRelay, ka, 20)},
		want:  []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "1.31× (stretch missed): 26.2 against 20.0 µs", false}},
	}, {
		name:  "relay's CPU not read",
		cells: []*cellResult{cpuCell(targetAgent, ka, 20), cpuCell(targetRelay, ka, 0)},
		want:  []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "not measured (agent 20.0 µs, relay 0.0 µs)", false}},
	}, {
		name:  "agent's CPU not read",
		cells: []*cellResult{cpuCell(targetAgent, ka, 0), cpuCell(targetRelay, ka, 20)},
		want:  []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "not measured (agent 0.0 µs, relay 20.0 µs)", false}},
	}, {
		name: "agent served nothing",
		cells: []*cellResult{func() *cellResult {
			c := cpuCell(targetAgent, ka, 20)
			c.load.Requests = 0
			return c
		}(), cpuCell(targetRelay, ka, 20)},
		want: []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "not measured (agent 0.0 µs, relay 20.0 µs)", false}},
	}, {
		name: "a row per mode that has both; none without the relay",
		cells: []*cellResult{
			cpuCell(targetAgent, ka, 22), cpuCell(targetRelay, ka, 20), cpuCell(targetNginx, ka, 10),
			cpuCell(targetAgent, nc, 60), cpuCell(targetNginx, nc, 30),
		},
		want: []goalRow{{"agent CPU per request against go relay's, 8 keep-alive", want, "1.10× (stretch met): 22.0 against 20.0 µs", true}},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			got := goalRows(&results{cells: tt.cells}, "agent CPU per request")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestRateGoal: the agent's pooled rate against plain nginx's, met from
// 0.85× as printed, with the per-round range; never against nginx+log,
// and missed when nginx served nothing.
func TestRateGoal(t *testing.T) {
	one, nc := cellMode{1, false}, cellMode{8, true}
	for _, tt := range []struct {
		name  string
		cells []*cellResult
		want  []goalRow
	}{{
		name:  "at the goal",
		cells: []*cellResult{cellOf(targetAgent, one, 850, time.Millisecond), cellOf(targetNginx, one, 1000, time.Millisecond)},
		want:  []goalRow{{"throughput against nginx, 1 keep-alive", "≥ 0.85× (850 req/s)", "850 req/s, 0.85×", true}},
	}, {
		name:  "judged as printed: 0.846 is 0.85×",
		cells: []*cellResult{cellOf(targetAgent, one, 846, time.Millisecond), cellOf(targetNginx, one, 1000, time.Millisecond)},
		want:  []goalRow{{"throughput against nginx, 1 keep-alive", "≥ 0.85× (850 req/s)", "846 req/s, 0.85×", true}},
	}, {
		name:  "under",
		cells: []*cellResult{cellOf(targetAgent, one, 844, time.Millisecond), cellOf(targetNginx, one, 1000, time.Millisecond)},
		want:  []goalRow{{"throughput against nginx, 1 keep-alive", "≥ 0.85× (850 req/s)", "844 req/s, 0.84×", false}},
	}, {
		// 2600 against 2800 requests in 3 s each; by round 0.9, 0.7 and 1.25.
		name:  "pooled, with the range by round",
		cells: []*cellResult{pooledCell(targetAgent, nc, 900, 700, 1000), pooledCell(targetNginx, nc, 1000, 1000, 800)},
		want:  []goalRow{{"throughput against nginx, 8, new conn", "≥ 0.85× (793 req/s)", "867 req/s, 0.93×; by round 0.70× to 1.25×", true}},
	}, {
		name:  "nginx served nothing",
		cells: []*cellResult{cellOf(targetAgent, one, 900, time.Millisecond), cellOf(targetNginx, one, 0, time.Millisecond)},
		want:  []goalRow{{"throughput against nginx, 1 keep-alive", "≥ 0.85× (0 req/s)", "900 req/s; nginx served none: no ratio", false}},
	}, {
		name:  "nginx+log is no basis",
		cells: []*cellResult{cellOf(targetAgent, one, 900, time.Millisecond), cellOf(targetNginxLog, one, 1000, time.Millisecond)},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			got := goalRows(&results{cells: tt.cells}, "throughput")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// us1024 is k × 1024 ns: for k in 64..127 the lower bound of a histogram
// bucket, which the quantile returns unchanged when every sample is it.
func us1024(k int) time.Duration { return time.Duration(k) * 1024 }

// TestP50Goal: what the agent adds to direct's p50 at one client against
// what nginx adds, met up to 1.25× as printed; when nginx adds nothing or
// less, the bound is zero.
func TestP50Goal(t *testing.T) {
	one := cellMode{1, false}
	lat := func(direct, nginx, agent int) []*cellResult {
		return []*cellResult{
			cellOf(targetDirect, one, 1000, us1024(direct)),
			cellOf(targetNginx, one, 1000, us1024(nginx)),
			cellOf(targetAgent, one, 1000, us1024(agent)),
		}
	}
	name := "p50 added over direct, 1 client"
	for _, tt := range []struct {
		name  string
		cells []*cellResult
		want  []goalRow
	}{{
		// direct 65.5 µs, nginx +41.0 µs, agent +51.2 µs.
		name:  "at the goal",
		cells: lat(64, 104, 114),
		want:  []goalRow{{name, "≤ 1.25× nginx's (≤ 51 µs)", "1.25×: agent +51 µs, nginx +40 µs", true}},
	}, {
		name:  "over",
		cells: lat(64, 104, 116),
		want:  []goalRow{{name, "≤ 1.25× nginx's (≤ 51 µs)", "1.30×: agent +53 µs, nginx +40 µs", false}},
	}, {
		name:  "agent faster than nginx",
		cells: lat(64, 104, 80),
		want:  []goalRow{{name, "≤ 1.25× nginx's (≤ 51 µs)", "0.40×: agent +16 µs, nginx +40 µs", true}},
	}, {
		name:  "nginx level with direct",
		cells: lat(64, 64, 70),
		want:  []goalRow{{name, "≤ 1.25× nginx's (≤ 0 µs)", "agent +6 µs, nginx +0 µs: nginx not above direct, bound 0", false}},
	}, {
		name:  "nginx below direct",
		cells: lat(70, 66, 74),
		want:  []goalRow{{name, "≤ 1.25× nginx's (≤ 0 µs)", "agent +4 µs, nginx -4 µs: nginx not above direct, bound 0", false}},
	}, {
		name:  "nginx and agent below direct",
		cells: lat(70, 66, 69),
		want:  []goalRow{{name, "≤ 1.25× nginx's (≤ 0 µs)", "agent -1 µs, nginx -4 µs: nginx not above direct, bound 0", true}},
	}, {
		name: "agent without latencies",
		cells: func() []*cellResult {
			cs := lat(64, 104, 80)
			cs[2].load.Latencies = newHistogram()
			return cs
		}(),
		want: []goalRow{{name, "≤ 1.25× nginx's", "not measured (agent has no latencies)", false}},
	}, {
		name:  "no nginx row",
		cells: []*cellResult{cellOf(targetDirect, one, 1000, us1024(64)), cellOf(targetAgent, one, 1000, us1024(80))},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			got := goalRows(&results{cells: tt.cells}, "p50")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
