package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/status"
)

// The install test runs the agent it installed, inside a network namespace
// of its own with the simulated host on the metadata addresses.
func TestMain(m *testing.M) { os.Exit(agenttest.Main(m)) }

// fakeTools stand in for systemd's tools in the throwaway root: each logs
// its name and arguments, one call a line.
var fakeTools = []string{"systemctl", "deb-systemd-helper", "deb-systemd-invoke"}

type dpkgRoot struct {
	t     *testing.T
	root  string
	calls string // the fake tools' log
	path  string
}

func newDpkgRoot(t *testing.T) *dpkgRoot {
	t.Helper()
	if _, err := exec.LookPath("dpkg"); err != nil {
		testenv.SkipOrFail(t, "needs dpkg: %v", err)
	}
	d := &dpkgRoot{t: t, root: t.TempDir()}
	for _, dir := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "fake-bin"} {
		if err := os.MkdirAll(filepath.Join(d.root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d.root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d.calls = filepath.Join(d.root, "fake-calls.log")
	for _, tool := range fakeTools {
		script := "#!/bin/sh\necho \"" + tool + " $*\" >> '" + d.calls + "'\n"
		if err := os.WriteFile(filepath.Join(d.root, "fake-bin", tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.path = filepath.Join(d.root, "fake-bin") + ":/usr/sbin:/usr/bin:/sbin:/bin"
	return d
}

// dpkg runs dpkg on the throwaway root, its maintainer scripts unchrooted
// with DPKG_ROOT set, and returns its output.
func (d *dpkgRoot) dpkg(args ...string) string {
	d.t.Helper()
	cmd := exec.Command("dpkg", append([]string{"--root=" + d.root, "--force-script-chrootless", "--force-not-root",
		"--log=" + filepath.Join(d.root, "dpkg.log")}, args...)...)
	cmd.Env = []string{"PATH=" + d.path, "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (d *dpkgRoot) file(p string) string { return filepath.Join(d.root, p) }

func (d *dpkgRoot) version() string {
	d.t.Helper()
	out, err := exec.Command(d.file(agent.InstalledBinary), "--version").Output()
	if err != nil {
		d.t.Fatalf("installed binary --version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestDebInstallUpgradeRemovePurge installs the .deb into a throwaway root,
// checks its files, modes and conffile, upgrades it over an edited
// conffile, runs the installed agent with pinned programs on a child
// cgroup, and checks that removing the package detaches them.
func TestDebInstallUpgradeRemovePurge(t *testing.T) {
	testenv.MustBeRoot(t)
	env := agenttest.New(t, &agenttest.Options{Pin: true})
	d := newDpkgRoot(t)
	ctx := context.Background()
	root, err := moduleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	debs := map[string]string{}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		paths, err := build(ctx, &options{Version: v, Arches: []string{"amd64"}, Formats: []string{"deb"}, Out: out,
			Root: root, MTime: time.Unix(1_700_000_000, 0).UTC()})
		if err != nil {
			t.Fatal(err)
		}
		debs[v] = paths[0]
	}

	t.Log("built the packages")
	// Install.
	d.dpkg("-i", debs["1.0.0"])
	for _, f := range []struct {
		path string
		mode fs.FileMode
	}{
		{agent.InstalledBinary, 0o755},
		{"/usr/sbin/msp-validate", 0o755},
		{agent.InstalledUnit, 0o644},
		{agent.DefaultConfigPath, 0o644},
		{"/var/log/azure-proxy-agent", fs.ModeDir | 0o755},
		{"/var/lib/azure-proxy-agent", fs.ModeDir | 0o700},
		{"/var/lib/azure-proxy-agent/keys", fs.ModeDir | 0o700},
		{"/var/lib/azure-proxy-agent/rules", fs.ModeDir | 0o700},
	} {
		fi, err := os.Stat(d.file(f.path))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode() != f.mode {
			t.Errorf("%s mode %v, want %v", f.path, fi.Mode(), f.mode)
		}
	}
	if st := d.dpkg("-s", "azure-proxy-agent"); !strings.Contains(st, "Conffiles:\n "+agent.DefaultConfigPath+" ") {
		t.Errorf("%s is not a conffile:\n%s", agent.DefaultConfigPath, st)
	}
	shipped, err := os.ReadFile(d.file(agent.DefaultConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := agent.ParseConfigFile(shipped); err != nil || cf.BPFPinFolder != pinFolder {
		t.Errorf("shipped configuration: %v, bpfPinFolder %q, want %q", err, cf.BPFPinFolder, pinFolder)
	}
	if v := d.version(); v != "1.0.0" {
		t.Errorf("installed --version %q, want 1.0.0", v)
	}
	calls, _ := os.ReadFile(d.calls)
	if !strings.Contains(string(calls), "deb-systemd-helper enable azure-proxy-agent.service") {
		t.Errorf("postinst did not enable the unit; calls:\n%s", calls)
	}

	t.Log("installed 1.0.0")
	// Upgrade over an edited conffile: the edit stays. The edit points the
	// agent at the test's child cgroup, pin folder and host.
	edited, err := os.ReadFile(env.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.file(agent.DefaultConfigPath), edited, 0o644); err != nil {
		t.Fatal(err)
	}
	d.dpkg("-i", debs["1.0.1"])
	if got, _ := os.ReadFile(d.file(agent.DefaultConfigPath)); !bytes.Equal(got, edited) {
		t.Fatalf("the upgrade replaced the edited conffile:\n%s", got)
	}
	if v := d.version(); v != "1.0.1" {
		t.Errorf("upgraded --version %q, want 1.0.1", v)
	}

	t.Log("upgraded to 1.0.1")
	// Run the installed agent: it pins and attaches on the child cgroup.
	cmd := exec.Command(d.file(agent.InstalledBinary), "-c", d.file(agent.DefaultConfigPath))
	var agentOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &agentOut, &agentOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for len(testenv.AttachedPrograms(t, env.Cgroup)) == 0 || !pinned(env.PinDir) {
		if time.Now().After(deadline) {
			t.Fatalf("the installed agent attached nothing on %s in 30 s:\n%s", env.Cgroup, agentOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := env.WaitStatus(t, 30*time.Second, "status.json from the installed agent", func(s *status.AggregateStatus) bool {
		return s.ProxyAgentStatus.Version != ""
	})
	if v := st.ProxyAgentStatus.Version; v != "1.0.1" {
		t.Errorf("status.json version %q, want 1.0.1", v)
	}

	t.Log("the installed agent attached and pinned")
	// Remove: the prerm stops the agent, detaches and unpins.
	removeOut := d.dpkg("-r", "azure-proxy-agent")
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the agent still runs after dpkg -r:\n%s", agentOut.String())
	}
	if progs := testenv.AttachedPrograms(t, env.Cgroup); len(progs) > 0 {
		t.Errorf("programs still attached to %s after dpkg -r: %v", env.Cgroup, progs)
	}
	if pinned(env.PinDir) {
		left, _ := exec.Command("find", env.PinDir).CombinedOutput()
		t.Errorf("pins left after dpkg -r:\n%s\ndpkg -r said:\n%s", left, removeOut)
	}
	if _, err := os.Stat(d.file(agent.InstalledBinary)); err == nil {
		t.Error("binary still installed after dpkg -r")
	}
	if _, err := os.Stat(d.file(agent.DefaultConfigPath)); err != nil {
		t.Errorf("dpkg -r removed the conffile: %v", err)
	}

	t.Log("removed")
	// Purge while status.json says MSP is enforcing: keys stay, logs go.
	key := d.file("/var/lib/azure-proxy-agent/keys/k.key")
	purge := func(channel string) string {
		t.Helper()
		for _, dir := range []string{filepath.Dir(key), d.file("/var/log/azure-proxy-agent")} {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(key, []byte("k"), 0o600); err != nil {
			t.Fatal(err)
		}
		reg := status.NewRegistry(&status.RegistryOptions{Version: "1.0.1"})
		reg.SetKeyLatchStates(status.KeyLatchStates{SecureChannelState: channel})
		b, err := reg.Snapshot(time.Now()).MarshalIndent()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.file("/var/log/azure-proxy-agent/status.json"), b, 0o640); err != nil {
			t.Fatal(err)
		}
		return d.dpkg("-P", "azure-proxy-agent")
	}
	if out := purge("WireServer Enforce -  IMDS Enforce - HostGA Enforce"); !strings.Contains(out, "keys stay") {
		t.Errorf("purge with MSP enabled gave no warning:\n%s", out)
	}
	if _, err := os.Stat(key); err != nil {
		t.Errorf("purge removed the keys while MSP is enabled: %v", err)
	}
	for _, gone := range []string{"/var/log/azure-proxy-agent", agent.DefaultConfigPath} {
		if _, err := os.Stat(d.file(gone)); err == nil {
			t.Errorf("%s still there after dpkg -P", gone)
		}
	}
	// Purge once MSP is disabled: the keys go too.
	d.dpkg("-i", debs["1.0.1"])
	// The prerm reads the conffile: keep it off the machine's own bpffs.
	if err := os.WriteFile(d.file(agent.DefaultConfigPath), edited, 0o644); err != nil {
		t.Fatal(err)
	}
	purge("disabled")
	if _, err := os.Stat(key); err == nil {
		t.Error("purge kept the keys although MSP is disabled")
	}
}

// pinned reports whether anything is pinned under dir, the root of a
// bpffs mount: the kernel's own maps.debug and progs.debug do not count.
func pinned(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "maps.debug" && e.Name() != "progs.debug" {
			return true
		}
	}
	return false
}
