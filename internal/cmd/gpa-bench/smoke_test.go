package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/testenv"
)

// envAsHarness makes the test binary run as gpa-bench: the outer run the
// smoke test makes starts it in a namespace as the inner run, and the inner
// run starts it again as its load generator.
const envAsHarness = "GPA_BENCH_TEST_AS_HARNESS"

func TestMain(m *testing.M) {
	if os.Getenv(envAsHarness) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestHarnessSmoke runs the whole harness with tiny bounds and without
// nginx: the agent and relay rows must be served and error-free with their
// proxy's CPU measured, the agent's signed, every goal that needs no
// comparison with nginx must be reported (those that do must not), and
// the run's cgroups must be gone afterwards.
func TestHarnessSmoke(t *testing.T) {
	testenv.MustBeRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		testenv.SkipOrFail(t, "needs unshare: %v", err)
	}
	root, err := ebpf.CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	if testing.Short() {
		t.Skip("builds the agent and runs it under load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The harness's own outer run builds the agent and re-executes this
	// binary in a namespace; the variable makes each re-execution (the
	// inner run and its load generators) run as gpa-bench.
	t.Setenv(envAsHarness, "1")
	var buf bytes.Buffer
	code := run(ctx, []string{"-duration", "200ms", "-rounds", "2", "-soak", "4000", "-startups", "2", "-no-nginx"}, &buf, &buf)
	out := buf.Bytes()
	if code != 0 {
		t.Fatalf("gpa-bench: exit %d\n%s", code, out)
	}
	rows := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "| agent |") && !strings.HasPrefix(line, "| direct |") && !strings.HasPrefix(line, "| go relay |") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 10 || cells[9] != "0" {
			t.Errorf("row with errors or malformed: %s", line)
			continue
		}
		// A proxy's CPU must have been measured, not lost with its process.
		if cpu, err := strconv.ParseFloat(cells[6], 64); cells[0] != targetDirect && (err != nil || cpu <= 0) {
			t.Errorf("row without the proxy's CPU: %s", line)
		}
	}
	if rows != 3*len(cellModes) {
		t.Errorf("%d direct, agent and relay rows, want %d\n%s", rows, 3*len(cellModes), out)
	}
	if n := len(regexp.MustCompile(`(?m)^round [12] +(direct|agent|go relay) `).FindAll(out, -1)); n != 2*3*len(cellModes) {
		t.Errorf("%d round lines, want two rounds of each direct, agent and relay cell\n%s", n, out)
	}
	for _, want := range []string{
		`start 2: SUCCESS after`,
		`\| IMDS requests through the agent reaching the host without a valid signature \| 0 \| 0 \| met \|`,
		`\| agent RSS idle \| ≤ 15 MB \| [0-9.]+ MB \|`,
		`\| RSS growth over 4000 requests \| ≤ 10% \|`,
		`\| soak requests failed or not 200 \| 0 \| 0 \| met \|`,
		`\| exec → SUCCESS, key latched \(worst of 2\) \|`,
		`\| connect\(\) slowdown, unprotected destination \| ≤ 3% \| [0-9.]+% in our programs \([1-9][0-9]* ns of`,
		`\| stripped agent binary \| ≤ 10 MB \| [0-9.]+ MB \|`,
	} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("output lacks %s\n%s", want, out)
		}
	}
	// Issue 22's CPU goal and comparison for every row, each with both
	// CPUs read; without nginx, no goal judged against it.
	for _, m := range cellModes {
		for _, want := range []string{
			`\| agent CPU per request against go relay's, ` + regexp.QuoteMeta(m.String()) + ` \| ≤ 1\.3× \(stretch ≤ 1\.15×\) \| [0-9.]+× \(stretch (met|missed)\): [0-9.]+ against [0-9.]+ µs \| (met|\*\*missed\*\*) \|`,
			`\| agent / go relay, proxy CPU per request \| ` + regexp.QuoteMeta(m.String()) + ` \| [0-9.]+× \(`,
		} {
			if !regexp.MustCompile(want).Match(out) {
				t.Errorf("output lacks %s\n%s", want, out)
			}
		}
	}
	if bytes.Contains(out, []byte("| throughput against nginx")) || bytes.Contains(out, []byte("| p50 added over direct")) {
		t.Errorf("goals against nginx in a -no-nginx run\n%s", out)
	}
	// The exact cgroups this run made (others may run at the same time)
	// are gone.
	made := regexp.MustCompile(`(?m)^cgroups removed: (.*)$`).FindSubmatch(out)
	if made == nil {
		t.Fatal("the harness did not report the cgroups it removed")
	}
	cgs := strings.Fields(string(made[1]))
	if len(cgs) != 2 {
		t.Errorf("removed %q, want the load and the plain cgroup", cgs)
	}
	for _, cg := range cgs {
		if filepath.Dir(cg) != filepath.Clean(root) || !strings.HasPrefix(filepath.Base(cg), "gpa-bench-") {
			t.Errorf("reported cgroup %s is not a gpa-bench child of %s", cg, root)
		}
		if _, err := os.Stat(cg); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left behind (%v)", cg, err)
		}
	}
}
