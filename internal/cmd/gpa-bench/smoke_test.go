package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/sandbox"
	"github.com/metadatasec/gpa/internal/testenv"
)

// envAsHarness makes the test binary run as gpa-bench: the smoke test
// starts it in a namespace as the inner run, and the inner run starts it
// again as its load generator.
const envAsHarness = "GPA_BENCH_TEST_AS_HARNESS"

func TestMain(m *testing.M) {
	if os.Getenv(envAsHarness) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestHarnessSmoke runs the whole harness with tiny bounds and without
// nginx: the agent rows must be served, signed and error-free, every goal
// that needs no comparison with nginx must be reported, and the cgroups
// must be gone afterwards.
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

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "azure-proxy-agent")
	mod, err := moduleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./examples/azure-proxy-agent")
	build.Dir = mod
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}

	cmd, err := sandbox.Command(ctx, os.Args[0], cmdInner, "-duration", "200ms", "-soak", "4000", "-startups", "2", "-no-nginx")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(cmd.Env, envAsHarness+"=1", envAgentBinary+"="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gpa-bench: %v\n%s", err, out)
	}
	rows := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "| agent |") && !strings.HasPrefix(line, "| direct |") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 10 || cells[9] != "0" {
			t.Errorf("row with errors or malformed: %s", line)
		}
	}
	if rows != 2*len(cellModes) {
		t.Errorf("%d direct and agent rows, want %d\n%s", rows, 2*len(cellModes), out)
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
	left, _ := filepath.Glob(filepath.Join(root, "gpa-bench-*"))
	if len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
}
