package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/status"
)

// childCgroup makes a cgroup under the v2 root, never the root itself.
func childCgroup(t *testing.T) string {
	t.Helper()
	root, err := ebpf.CgroupV2Root()
	testenv.Require(t, "a cgroup v2 mount", err)
	dir, err := os.MkdirTemp(root, "gpa-uninstall-test-")
	if err != nil {
		testenv.SkipOrFail(t, "cannot create a child cgroup: %v", err)
	}
	if filepath.Dir(dir) != filepath.Clean(root) {
		t.Fatalf("refusing to use %s as a test cgroup", dir)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	return dir
}

// TestUninstallDetachesPinnedPrograms: programs an agent left pinned keep
// redirecting after it exits; Uninstall removes the pins, whatever their
// names, and with them the programs.
func TestUninstallDetachesPinnedPrograms(t *testing.T) {
	testenv.MustBeRoot(t)
	cg := childCgroup(t)
	dir := t.TempDir()
	pins := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("bpf", pins, "bpf", 0, "mode=0700"); err != nil {
		testenv.SkipOrFail(t, "cannot mount a bpffs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(pins, 0) })
	pinFolder := filepath.Join(pins, "azure-proxy-agent")

	r, err := ebpf.Load(context.Background(), ebpf.Options{CgroupPath: cg, PinPath: pinFolder})
	if err != nil {
		testenv.Require(t, "eBPF cgroup programs", err)
	}
	r.Close() // as an agent that exits: the pins keep the programs attached
	if len(testenv.AttachedPrograms(t, cg)) == 0 {
		t.Fatal("no program attached after the pinned redirector closed; the test checks nothing")
	}
	// A folder of an older version, under a name this one does not use.
	if err := os.Mkdir(filepath.Join(pinFolder, "old-layout"), 0o700); err != nil {
		t.Fatal(err)
	}

	cfgPath := writeConfig(t, dir, map[string]any{"bpfPinFolder": pinFolder, "cgroupPath": cg})
	var calls []string
	rep, err := Uninstall(context.Background(), &UninstallOptions{
		ConfigPath: cfgPath,
		Program:    filepath.Join(dir, "no-such-binary"),
		Files:      []string{},
		Systemctl: func(_ context.Context, args ...string) error {
			calls = append(calls, strings.Join(args, " "))
			return nil
		},
	})
	if err != nil {
		t.Fatalf("Uninstall: %v (report %+v)", err, rep)
	}
	if progs := testenv.AttachedPrograms(t, cg); len(progs) > 0 {
		t.Errorf("programs still attached to %s after Uninstall: %v", cg, progs)
	}
	if _, err := os.Stat(pinFolder); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin folder %s still there: %v", pinFolder, err)
	}
	if diff := cmp.Diff([]string{"stop " + ServiceName, "disable " + ServiceName, "daemon-reload"}, calls); diff != "" {
		t.Errorf("systemctl calls (-want +got):\n%s", diff)
	}
}

// TestUninstallRefusesNonBPFFSPinFolder: a pin folder that is an ordinary
// folder (a wrong configuration) is left alone.
func TestUninstallRefusesNonBPFFSPinFolder(t *testing.T) {
	dir := t.TempDir()
	pins := filepath.Join(dir, "pins")
	keep := filepath.Join(pins, "links", "precious")
	if err := os.MkdirAll(filepath.Dir(keep), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := writeConfig(t, dir, map[string]any{"bpfPinFolder": pins})
	_, err := Uninstall(context.Background(), &UninstallOptions{ConfigPath: cfgPath, Program: "-", Files: []string{}, KeepFiles: true,
		Systemctl: func(context.Context, ...string) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "not on a bpffs") {
		t.Errorf("Uninstall error = %v, want a refusal naming the bpffs", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file in the misconfigured pin folder was removed: %v", err)
	}
}

// TestUninstallPurge: logs always go on purge; keys only when status.json
// says MSP is disabled, and a warning says why they stay otherwise.
func TestUninstallPurge(t *testing.T) {
	for _, tt := range []struct {
		name        string
		channel     string // "" writes no status.json
		keysRemoved bool
		warning     string
	}{
		{"disabled", "disabled", true, ""},
		{"enforcing", "WireServer Enforce -  IMDS Audit - HostGA Audit", false, "MSP is enabled for this VM"},
		{"unknown", "Unknown", false, "cannot tell"},
		{"no status", "", false, "cannot tell"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			logs, keys := filepath.Join(dir, "log"), filepath.Join(dir, "lib", "keys")
			bin, unit := filepath.Join(dir, "azure-proxy-agent"), filepath.Join(dir, "azure-proxy-agent.service")
			for _, d := range []string{logs, keys} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range []string{filepath.Join(keys, "k.key"), filepath.Join(logs, AgentLogName), bin, unit} {
				if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.channel != "" {
				reg := status.NewRegistry(&status.RegistryOptions{Version: "t"})
				reg.SetKeyLatchStates(status.KeyLatchStates{SecureChannelState: tt.channel})
				b, err := reg.Snapshot(time.Now()).MarshalIndent()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(logs, StatusFileName), b, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			cfgPath := writeConfig(t, dir, map[string]any{"logFolder": logs, "latchKeyFolder": keys})
			rep, err := Uninstall(context.Background(), &UninstallOptions{
				ConfigPath: cfgPath, Program: bin, Files: []string{bin, unit}, Purge: true,
				Systemctl: func(context.Context, ...string) error { return nil },
			})
			if err != nil {
				t.Fatalf("Uninstall: %v", err)
			}
			for _, gone := range []string{logs, bin, unit, cfgPath} {
				if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s not removed (%v)", gone, err)
				}
			}
			_, err = os.Stat(filepath.Join(keys, "k.key"))
			if removed := errors.Is(err, os.ErrNotExist); removed != tt.keysRemoved {
				t.Errorf("keys removed = %v, want %v", removed, tt.keysRemoved)
			}
			warned := strings.Join(rep.Warnings, "\n")
			if tt.warning == "" && warned != "" || !strings.Contains(warned, tt.warning) {
				t.Errorf("warnings %q, want one containing %q", warned, tt.warning)
			}
		})
	}
}

// TestUninstallRefusesSystemFolders: a logFolder of /var/log must not make
// purge remove every log of the machine.
func TestUninstallRefusesSystemFolders(t *testing.T) {
	rep := &UninstallReport{}
	for _, d := range []string{"/", "/var/log", "/var/lib/", "relative/path"} {
		if err := removeTree(d, rep); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("removeTree(%q) = %v, want ErrUnsafePath", d, err)
		}
	}
}

func TestUninstallCommandArgs(t *testing.T) {
	var out, errOut strings.Builder
	if code := UninstallCommand(context.Background(), []string{"--purge", "extra"}, nil, &out, &errOut); code != 2 {
		t.Errorf("exit %d for an extra argument, want 2", code)
	}
	if code := UninstallCommand(context.Background(), []string{"--nope"}, nil, &out, &errOut); code != 2 {
		t.Errorf("exit %d for an unknown flag, want 2", code)
	}
}

// writeConfig writes a configuration with upstream's required keys plus
// extra, under dir, and returns its path.
func writeConfig(t *testing.T, dir string, extra map[string]any) string {
	t.Helper()
	cfg := map[string]any{
		"logFolder": filepath.Join(dir, "log"), "eventFolder": filepath.Join(dir, "log", "events"),
		"latchKeyFolder": filepath.Join(dir, "keys"), "monitorIntervalInSeconds": 60,
		"pollKeyStatusIntervalInSeconds": 15, "ebpfProgramName": "ebpf_cgroup.o",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "proxy-agent.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUninstallPurgeKeepsKeysInsideLogs: with MSP enabled the keys stay,
// also when the key folder lies inside the log folder that purge would
// otherwise remove whole.
func TestUninstallPurgeKeepsKeysInsideLogs(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "gpa")
	keys := filepath.Join(logs, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(keys, "k.key")
	if err := os.WriteFile(key, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := status.NewRegistry(&status.RegistryOptions{Version: "t"})
	reg.SetKeyLatchStates(status.KeyLatchStates{SecureChannelState: "WireServer Enforce -  IMDS Enforce - HostGA Enforce"})
	b, err := reg.Snapshot(time.Now()).MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(logs, StatusFileName), b, 0o640); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "azure-proxy-agent")
	if err := os.WriteFile(bin, []byte("x"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := writeConfig(t, dir, map[string]any{"logFolder": logs, "latchKeyFolder": keys})
	rep, err := Uninstall(context.Background(), &UninstallOptions{
		ConfigPath: cfgPath, Program: bin, Files: []string{bin}, Purge: true,
		Systemctl: func(context.Context, ...string) error { return nil },
	})
	if err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	if _, err := os.Stat(key); err != nil {
		t.Errorf("the key inside the log folder was removed: %v", err)
	}
	if w := strings.Join(rep.Warnings, "\n"); !strings.Contains(w, "holds the key folder") {
		t.Errorf("warnings %q do not say why the log folder stays", w)
	}
}

func TestWithin(t *testing.T) {
	for _, tt := range []struct {
		path, dir string
		want      bool
	}{
		{"/var/lib/gpa/keys", "/var/lib/gpa", true},
		{"/var/lib/gpa", "/var/lib/gpa", true},
		{"/var/lib/gpa/", "/var/lib/gpa", true},
		{"/var/lib/gpa-keys", "/var/lib/gpa", false},
		{"/var/lib", "/var/lib/gpa", false},
		{"/var/lib/azure-proxy-agent/keys", "/var/log/azure-proxy-agent", false},
	} {
		if got := within(tt.path, tt.dir); got != tt.want {
			t.Errorf("within(%q, %q) = %v, want %v", tt.path, tt.dir, got, tt.want)
		}
	}
}
