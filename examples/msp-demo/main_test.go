package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/testenv"
)

// The test binary doubles as the demo binary: the demo re-executes itself
// inside its network namespace, and its sample callers are the same binary.
const envAsDemo = "GPA_TEST_RUN_AS_DEMO"

func TestMain(m *testing.M) {
	if os.Getenv(envAsDemo) == "1" {
		os.Exit(main2())
	}
	os.Exit(m.Run())
}

// main2 is main without os.Exit, for the test binary.
func main2() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "help"} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{arg}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "usage: msp-demo") {
			t.Errorf("%s: exit %d, %q", arg, code, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage: msp-demo") {
		t.Errorf("bad flag: exit %d, %q", code, errOut.String())
	}
}

// TestSummarizeStatus: the demo's last lines come from status.json's
// fields, not from a template.
func TestSummarizeStatus(t *testing.T) {
	in := `{"timestamp":"2026-12-04T10:00:00.000","proxyAgentStatus":{"version":"1","status":"ERROR",
	"keyLatchStatus":{"status":"RUNNING","message":"m","states":{"secureChannelState":"WireServer Audit -  IMDS Enforce - HostGA Disabled","keyGuid":"g-1","keyIncarnationId":"3"}},
	"ebpfProgramStatus":{"status":"STOPPED","message":""},"proxyListenerStatus":{"status":"RUNNING","message":""},"proxyConnectionsCount":42},
	"proxyConnectionSummary":[],"failedAuthenticateSummary":[{"count":5},{"count":2}]}`
	var out bytes.Buffer
	if err := summarizeStatus(&out, []byte(in)); err != nil {
		t.Fatal(err)
	}
	want := `   status ERROR (key latch RUNNING, eBPF STOPPED, listener RUNNING)
   key g-1, keyIncarnationId 3
   modes WireServer Audit -  IMDS Enforce - HostGA Disabled
   42 requests, 7 in the failed-authorization summary
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := summarizeStatus(&out, []byte("{")); err == nil {
		t.Error("a torn status.json was summarized")
	}
}

// The README's main command, end to end: it must succeed, show the
// decisions, and leave nothing behind.
func TestDemo(t *testing.T) {
	testenv.MustBeRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		testenv.SkipOrFail(t, "needs unshare: %v", err)
	}
	root, err := ebpf.CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), envAsDemo+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		`--status: exit 0 after`,
		// Audit: root allowed by its identity, nobody audited and forwarded,
		// nobody refused WireServer, every forwarded request signed.
		`root\s+169\.254\.169\.254/metadata/instance\?api-version=2021-02-01\s+200\s+allow\s+identity-matched instance-metadata \(demo-imds-rules-useLocalFileRules-false\)\s+200, signature valid`,
		`nobody\s+169\.254\.169\.254/metadata/identity/oauth2/token\S*\s+200\s+audit\s+default \(demo-imds-rules-useLocalFileRules-false\)\s+200, signature valid`,
		`nobody\s+168\.63\.129\.16/machine\?comp=goalstate\s+403\s+deny\s+root-required \(demo-wireserver-rules-useLocalFileRules-false\)\s+nothing`,
		`root\s+168\.63\.129\.16/machine\?comp=goalstate\s+200\s+allow\s+default \(demo-wireserver-rules-useLocalFileRules-false\)\s+200, signature valid`,
		`\s+403\s+-\s+path traversal\s+nothing`,
		// Enforce: the same token request is now refused before the host.
		`nobody\s+169\.254\.169\.254/metadata/identity/oauth2/token\S*\s+403\s+deny\s+default \(demo-imds-rules-useLocalFileRules-false\)\s+nothing \(blocked by the agent\)`,
		`phase 3: key reset`,
		`status SUCCESS \(key latch RUNNING, eBPF RUNNING, listener RUNNING\)`,
		`key [0-9a-f-]{36}, keyIncarnationId \d+`,
		`modes WireServer Enforce -  IMDS Enforce - HostGA Enforce`,
		`\d+ requests, \d+ in the failed-authorization summary`,
		`the whole file: \S+msp-demo-status\.json`,
		`cgroup ` + regexp.QuoteMeta(root) + `/gpa-demo-\d+ removed`,
	} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("demo output lacks %s", want)
		}
	}
	// Every request the host saw carried a valid signature: 3 in Audit, 2
	// in Enforce, 1 after the key reset (more with curl).
	if n := len(regexp.MustCompile(`signature valid`).FindAll(out, -1)); n < 6 {
		t.Errorf("%d requests with a valid signature, want at least 6", n)
	}
	if regexp.MustCompile(`unsigned|INVALID`).Match(out) {
		t.Error("the host saw an unsigned or badly signed request")
	}
	checkREADMESample(t, out)
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
	// The exact cgroup and state folder this demo made (others may run at
	// the same time) are gone.
	made := regexp.MustCompile(`cgroup (\S+) removed; state folder (\S+) removed`).FindSubmatch(out)
	if made == nil {
		t.Fatal("the demo did not report what it removed")
	}
	for _, p := range made[1:] {
		if _, err := os.Stat(string(p)); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

// TestDemoInterrupt: Ctrl-C during a phase prints "interrupted", cleans up
// and exits 130 within a second.
func TestDemoInterrupt(t *testing.T) {
	testenv.MustBeRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		testenv.SkipOrFail(t, "needs unshare: %v", err)
	}
	for _, phase := range []string{"phase 1", "phase 3"} {
		t.Run(phase, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0])
			cmd.Env = append(os.Environ(), envAsDemo+"=1")
			// A process group of its own, as a terminal's foreground job:
			// Ctrl-C reaches the demo and its namespaced child alike.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			pr, pw := io.Pipe()
			cmd.Stdout, cmd.Stderr = pw, pw
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			sc := bufio.NewScanner(pr)
			seen, drained := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(drained)
				once := false
				for sc.Scan() {
					out.WriteString(sc.Text() + "\n")
					if !once && strings.Contains(sc.Text(), phase) {
						once = true
						close(seen)
					}
				}
			}()
			select {
			case <-seen:
			case <-ctx.Done():
				t.Fatalf("never reached %s", phase)
			}
			sent := time.Now()
			if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			took := time.Since(sent)
			pw.Close()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
				t.Errorf("exit: %v, want status %d", err, exitInterrupted)
			}
			if took > time.Second {
				t.Errorf("took %v after Ctrl-C, want at most 1s", took)
			}
			<-drained // the reader has read all the demo wrote
			if !strings.Contains(out.String(), "interrupted") || !regexp.MustCompile(`cgroup \S+ removed`).MatchString(out.String()) {
				t.Errorf("output:\n%s", out.String())
			}
		})
	}
}

// normalizeDemo replaces what differs between runs and machines (the
// cgroup root, pids, temporary folders, the key, times and the count of
// --status polls) with the README's placeholders.
func normalizeDemo(s string) string {
	for _, r := range []struct{ re, with string }{
		{`/sys/fs/cgroup(/unified)?/gpa-demo-\d+`, "/sys/fs/cgroup/gpa-demo-12345"},
		{`/tmp/gpa-demo-\d+`, "/tmp/gpa-demo-12345"},
		{`after \d+ ms`, "after 195 ms"},
		{`key [0-9a-f-]{36},`, "key a36f99a4-3e44-425a-99bf-d1e278b98c5c,"},
		// --status's /provision polls are requests too, one or two by timing.
		{`\d+ requests, `, "15 requests, "},
	} {
		s = regexp.MustCompile(r.re).ReplaceAllString(s, r.with)
	}
	return strings.TrimSpace(s)
}

// checkREADMESample fails when the README's demo sample is not what the
// demo printed. The sample has the curl rows, so it is compared only where
// curl is installed (CI installs it).
func checkREADMESample(t *testing.T, out []byte) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil && !testenv.InCI() {
		t.Log("no curl: the README sample (with curl rows) is not compared")
		return
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- demo-sample:begin -->\n```\n(.*?)```\n<!-- demo-sample:end -->").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no demo sample between its demo-sample markers")
	}
	if diff := cmp.Diff(normalizeDemo(string(m[1])), normalizeDemo(string(out))); diff != "" {
		t.Errorf("README.md's demo sample is stale (-README +demo); paste the demo's output:\n%s", diff)
	}
}
