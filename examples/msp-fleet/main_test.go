package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"

	"github.com/metadatasec/gpa/arm/armtest"
	"github.com/metadatasec/gpa/arm/fleet"
)

// TestMain runs the command itself when a test starts this binary as a
// child (MSP_FLEET_CHILD_ARGS holds its arguments as JSON), so that a test
// can kill it mid-rollout.
func TestMain(m *testing.M) {
	if a := os.Getenv("MSP_FLEET_CHILD_ARGS"); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(exitUsage)
		}
		os.Exit(run(context.Background(), args, os.Stdout, os.Stderr, fakeCredential))
	}
	os.Exit(m.Run())
}

func fakeCredential(cloud.Configuration) (azcore.TokenCredential, error) {
	return &fake.TokenCredential{}, nil
}

var sub = armtest.FleetSubscription(0)

type fixture struct {
	srv  *armtest.Server
	dir  string
	conn []string // --arm-endpoint and --ca-file
}

func newFixture(t *testing.T, n, scaleSets int) *fixture {
	t.Helper()
	srv := armtest.NewServer(nil)
	t.Cleanup(srv.Close)
	srv.AddFleet(n, &armtest.FleetOptions{ScaleSets: scaleSets})
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, dir: dir, conn: []string{"--arm-endpoint", srv.URL, "--ca-file", ca}}
}

// run runs one command line against the fixture: args[0] is the command,
// the connection flags follow it.
func (f *fixture) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append(append([]string{args[0]}, f.conn...), args[1:]...)
	code := run(context.Background(), full, &out, &errb, fakeCredential)
	return code, out.String(), errb.String()
}

func (f *fixture) file(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const enforceSpec = `{"proxyAgentSettings": {"enabled": true, "wireServer": {"mode": "Enforce"}, "imds": {"mode": "Audit"}}}`

func TestHelpOnEverySubcommand(t *testing.T) {
	for name := range commands {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{name, "-h"}, &out, &errb, fakeCredential)
		if code != exitOK || !strings.Contains(errb.String(), "usage: msp-fleet "+name) || !strings.Contains(errb.String(), "-show-query") {
			t.Errorf("%s -h: %d %q", name, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &out, &errb, fakeCredential); code != exitUsage {
		t.Errorf("unknown command: %d", code)
	}
}

func TestShowQueryRunsNothing(t *testing.T) {
	f := newFixture(t, 3, 0)
	code, out, errs := f.run(t, "inventory", "--where", "tags['env'] =~ 'prod'", "--show-query")
	want := fleet.Selection{Where: "tags['env'] =~ 'prod'"}.Query() + "\n"
	if code != exitOK || out != want {
		t.Errorf("%d %q %s\nwant %q", code, out, errs, want)
	}
	spec := f.file(t, "want.json", `{"proxyAgentSettings":{"enabled":true},"tags":{"env":"prod"}}`)
	code, out, _ = f.run(t, "apply", "--want", spec, "--show-query")
	if code != exitOK || !strings.Contains(out, "| where tags['env'] =~ 'prod'") {
		t.Errorf("apply --show-query: %d %q", code, out)
	}
	if n := len(f.srv.Requests()); n != 0 {
		t.Errorf("--show-query sent %d requests", n)
	}
}

func TestInventoryJSONAndCSV(t *testing.T) {
	f := newFixture(t, 12, 1)
	code, out, errs := f.run(t, "inventory", "--json", "--page-size", "5")
	if code != exitOK {
		t.Fatalf("%d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 13 || !strings.HasPrefix(lines[0], `{"summary":{"total":{"vm":9,"vmss":1,"vmss-instance":2},"withoutMsp":`) {
		t.Fatalf("%d lines, first %q", len(lines), lines[0])
	}
	for _, l := range lines[1:] {
		var row jsonRow
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&row); err != nil || row.ID == "" {
			t.Errorf("%q: %v", l, err)
		}
	}
	code, out, _ = f.run(t, "inventory", "--csv", "--subscriptions", sub)
	r := csv.NewReader(strings.NewReader(out))
	r.Comment = '#'
	recs, err := r.ReadAll()
	if code != exitOK || err != nil || len(recs) != 13 || strings.Join(recs[0], ",") != strings.Join(columns, ",") {
		t.Errorf("csv: %d %v %d records", code, err, len(recs))
	}
}

func TestDriftExitStatus(t *testing.T) {
	f := newFixture(t, 6, 0)
	spec := f.file(t, "want.json", enforceSpec)
	code, out, errs := f.run(t, "drift", "--want", spec)
	if code != exitDrift || !strings.Contains(out, "drift") {
		t.Fatalf("%d %s %s", code, out, errs)
	}
	if code, out, errs = f.run(t, "apply", "--want", spec, "--poll-interval", "1ms"); code != exitOK {
		t.Fatalf("apply: %d %s %s", code, out, errs)
	}
	if code, out, _ = f.run(t, "drift", "--want", spec); code != exitOK || !strings.HasPrefix(out, "0 of 6") {
		t.Errorf("after apply: %d %q", code, out)
	}
	bad := f.file(t, "bad.json", `{"proxyAgentSettings":{"wireServer":{"mode":"Enforce","inVMAccessControlProfileReferenceId":"`+armtest.FleetProfileVersion(sub)+`"}}}`)
	if code, _, errs = f.run(t, "apply", "--want", bad); code != exitUsage || !strings.Contains(errs, "mode") {
		t.Errorf("mode and profile: %d %s", code, errs)
	}
}

func TestResetKeysNeedsWhere(t *testing.T) {
	f := newFixture(t, 4, 0)
	if code, _, errs := f.run(t, "reset-keys"); code != exitUsage || !strings.Contains(errs, "--where") {
		t.Errorf("%d %s", code, errs)
	}
	code, out, errs := f.run(t, "reset-keys", "--all", "--dry-run", "--poll-interval", "1ms")
	if code != exitOK || strings.Count(out, "dry-run vm") != 4 || len(f.srv.Writes()) != 0 {
		t.Errorf("%d %s %s", code, out, errs)
	}
}

func TestGateStopsBeforeNextWave(t *testing.T) {
	f := newFixture(t, 10, 0)
	spec := f.file(t, "want.json", enforceSpec)
	code, out, _ := f.run(t, "apply", "--want", spec, "--waves", "10%,100%", "--gate", "exit 4", "--poll-interval", "1ms")
	if code != exitError || !strings.Contains(out, "gate before wave 2/2") || len(f.srv.Writes()) != 1 {
		t.Errorf("%d %s writes %v", code, out, f.srv.Writes())
	}
}

// TestKillAndResume kills msp-fleet apply (SIGKILL, a real crash) at a
// random point and resumes it from its state file; every resource must be
// updated exactly once.
func TestKillAndResume(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	f := newFixture(t, 120, 4)
	spec := f.file(t, "want.json", enforceSpec)
	state := filepath.Join(f.dir, "rollout.state")
	args := append(append([]string{"apply"}, f.conn...), "--want", spec, "--state", state, "--max-parallel", "4", "--poll-interval", "1ms", "--waves", "10%,100%")
	b, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MSP_FLEET_CHILD_ARGS="+string(b))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAt := 1 + rng.IntN(60)
	sc := bufio.NewScanner(stdout)
	lines := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "wave ") {
			lines++
		}
		if lines == killAt {
			_ = cmd.Process.Kill()
			break
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	_ = cmd.Wait()
	if lines < killAt {
		t.Fatalf("the child finished after %d events, before the kill at %d", lines, killAt)
	}
	code, out, errs := f.run(t, append([]string{"apply"}, "--want", spec, "--state", state, "--max-parallel", "4", "--poll-interval", "1ms", "--waves", "10%,100%")...)
	if code != exitOK {
		t.Fatalf("resume: %d %s %s", code, out, errs)
	}
	if !strings.Contains(out, "skipped") {
		t.Errorf("resume output %s", out)
	}
	for id, n := range f.srv.Writes() {
		if n != 1 {
			t.Errorf("%s written %d times", id, n)
		}
	}
	code, out, _ = f.run(t, "drift", "--want", spec)
	if code != exitOK {
		t.Errorf("drift after resume: %d %s", code, out)
	}
}

func TestCloudFlag(t *testing.T) {
	var got cloud.Configuration
	cred := func(c cloud.Configuration) (azcore.TokenCredential, error) {
		got = c
		return &fake.TokenCredential{}, nil
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"inventory", "--cloud", "Mars"}, &out, &errb, cred); code != exitError || !strings.Contains(errb.String(), "AzureChina") {
		t.Errorf("--cloud Mars: %d %s", code, errb.String())
	}
	// The credential is made for the chosen cloud; the query then fails
	// against a closed loopback port, which is not under test here.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	run(ctx, []string{"inventory", "--cloud", "AzureChina", "--arm-endpoint", "https://127.0.0.1:1"}, &out, &errb, cred)
	if got.ActiveDirectoryAuthorityHost != cloud.AzureChina.ActiveDirectoryAuthorityHost {
		t.Errorf("credential made for %+v", got)
	}
	if code := run(context.Background(), []string{"inventory", "--arm-endpoint", "http://127.0.0.1:1"}, &out, &errb, cred); code != exitError || !strings.Contains(errb.String(), "https") {
		t.Errorf("http endpoint: %d", code)
	}
}
