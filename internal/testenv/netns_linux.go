package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/sandbox"
)

// envNetnsTest names the test a child started by InNetns is to run.
const envNetnsTest = "GPA_TESTENV_NETNS_TEST"

// InNetns runs the calling top-level test again in a network namespace of
// its own, made by sandbox.Command, with the metadata addresses on its
// loopback, and reports whether the caller is that run. A test calls it
// first:
//
//	if !testenv.InNetns(t) {
//		return // the run inside the namespace passed or t failed
//	}
//	// Only here are the metadata addresses safe to dial.
//
// Outside, it needs root and ip(8) (skipping or, under CI, failing
// without them), waits up to a minute for the child, logs its output,
// fails t if the child failed or did not run the test, and skips t if the
// child skipped.
func InNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envNetnsTest) == t.Name() {
		// SetupLoopback refuses unless this is the namespace sandbox.Command
		// made, so nothing the test does can reach a real metadata address.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sandbox.SetupLoopback(ctx); err != nil {
			t.Fatal(err)
		}
		return true
	}
	MustBeRoot(t)
	_, err := exec.LookPath("ip")
	Require(t, "ip(8)", err)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, err := sandbox.Command(ctx, exe, "-test.run", "^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	Require(t, "a new network namespace (unshare(1))", err)
	cmd.Env = append(cmd.Env, envNetnsTest+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child in a new network namespace failed: %v", err)
	}
	switch childResult(out, t.Name()) {
	case "PASS":
	case "SKIP":
		t.Skip("the child in the namespace skipped (its output is above)")
	default:
		t.Fatalf("the child in a new network namespace did not run %s", t.Name())
	}
	return false
}

// childResult returns "PASS" or "SKIP" from the -test.v output of a child
// that ran test, or "" when the output has neither: exit status 0 also
// means a child that ran nothing ("no tests to run").
func childResult(out []byte, test string) string {
	for _, r := range []string{"PASS", "SKIP"} {
		if bytes.Contains(out, []byte("--- "+r+": "+test+" (")) {
			return r
		}
	}
	return ""
}
