package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/metadatasec/gpa/status"
)

// Installed paths, as upstream's packages lay them out.
const (
	InstalledBinary   = "/usr/sbin/azure-proxy-agent"
	InstalledUnit     = "/usr/lib/systemd/system/azure-proxy-agent.service"
	ServiceName       = "azure-proxy-agent.service"
	systemdRunningDir = "/run/systemd/system"
)

// UninstallOptions say what Uninstall removes. The zero value (or nil)
// uninstalls a manual installation: the configuration found by
// FindConfigFile, systemctl when systemd runs, the installed binary and
// unit.
type UninstallOptions struct {
	// ConfigPath is the configuration file to read the pin, key and log
	// folders from; FindConfigFile's search when empty. When no file is
	// found the shipped configuration's folders are used.
	ConfigPath string
	// Program is the agent's binary: every other process running it is
	// stopped, and it is removed unless KeepFiles. os.Executable() when
	// empty.
	Program string
	// Files are removed after the agent stops: the binary and the unit
	// when nil.
	Files []string
	// KeepFiles leaves the installed files in place: a package manager
	// removes its own.
	KeepFiles bool
	// Purge also removes the logs and, unless MSP is still enabled for the
	// VM, the keys; without KeepFiles, the configuration file too.
	Purge bool
	// Systemctl runs systemctl with args. When nil, the systemctl command
	// is run if systemd is the running init (/run/systemd/system exists),
	// and no service is managed otherwise.
	Systemctl func(ctx context.Context, args ...string) error
	// StopTimeout bounds the wait for an agent process to exit after
	// SIGTERM before it is killed; 10 s when zero.
	StopTimeout time.Duration
}

// UninstallReport says what Uninstall did, for the operator.
type UninstallReport struct {
	// Done lists what was done, one line each.
	Done []string
	// Warnings lists what was left in place and why.
	Warnings []string
}

func (r *UninstallReport) did(format string, args ...any) {
	r.Done = append(r.Done, fmt.Sprintf(format, args...))
}

func (r *UninstallReport) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// ErrUnsafePath is returned instead of removing a configured folder that is
// a system folder (/, /var/log, …): a wrong configuration must not turn an
// uninstall into a wipe.
var ErrUnsafePath = errors.New("agent: refusing to remove a system folder")

// Uninstall takes the agent off the machine in the order that leaves no
// caller redirected to a proxy that is gone: it stops the service (and any
// other process running Program), removes the pinned programs and maps in
// the configured bpfPinFolder, which detaches the programs once no process
// holds them, and removes the installed files. With Purge it removes the
// logs, and the keys when status.json says MSP is disabled for the VM;
// while MSP is enabled, or when that cannot be told, the keys stay and a
// warning says so, because a VM that loses its key cannot reach the host
// until the key is reset. Errors are collected: every step runs.
func Uninstall(ctx context.Context, opts *UninstallOptions) (*UninstallReport, error) {
	var o UninstallOptions
	if opts != nil {
		o = *opts
	}
	if o.Program == "" {
		if exe, err := os.Executable(); err == nil {
			o.Program = exe
		}
	}
	if o.Files == nil {
		o.Files = []string{InstalledBinary, InstalledUnit}
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	systemctl := o.Systemctl
	if systemctl == nil {
		if fi, err := os.Stat(systemdRunningDir); err == nil && fi.IsDir() {
			systemctl = runSystemctl
		}
	}
	rep := &UninstallReport{}
	var errs []error
	cf, cfgPath, err := uninstallConfig(o.ConfigPath)
	if err != nil {
		rep.warn("%v; using the shipped configuration's folders", err)
	}

	// 1. Stop: nothing may hold the links once the pins go.
	if systemctl != nil {
		args := [][]string{{"stop", ServiceName}}
		if !o.KeepFiles {
			args = append(args, []string{"disable", ServiceName})
		}
		for _, a := range args {
			if err := systemctl(ctx, a...); err != nil {
				errs = append(errs, fmt.Errorf("systemctl %s: %w", strings.Join(a, " "), err))
			} else {
				rep.did("systemctl %s", strings.Join(a, " "))
			}
		}
	}
	if o.Program != "" {
		n, err := stopProcesses(ctx, o.Program, o.StopTimeout)
		if err != nil {
			errs = append(errs, err)
		}
		if n > 0 {
			rep.did("stopped %d process(es) running %s", n, o.Program)
		}
	}

	// 2. Pins.
	if err := removePins(cf.BPFPinFolder, rep); err != nil {
		errs = append(errs, err)
	}

	// 3. Files.
	if !o.KeepFiles {
		files := o.Files
		if o.Purge && cfgPath != "" {
			files = append(files[:len(files):len(files)], cfgPath)
		}
		for _, f := range files {
			if err := os.Remove(f); err == nil {
				rep.did("removed %s", f)
			} else if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if systemctl != nil {
			if err := systemctl(ctx, "daemon-reload"); err != nil {
				errs = append(errs, fmt.Errorf("systemctl daemon-reload: %w", err))
			}
		}
	}

	// 4. Purge.
	if o.Purge {
		if err := purge(cf, rep); err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// uninstallConfig reads the configuration, or falls back on the shipped
// one (already purged, or never written).
func uninstallConfig(path string) (*ConfigFile, string, error) {
	cf, err := FindConfigFile(path)
	if err == nil {
		if path == "" {
			path = DefaultConfigPath
			if _, serr := os.Stat(path); serr != nil {
				if exe, eerr := os.Executable(); eerr == nil {
					path = filepath.Join(filepath.Dir(exe), "proxy-agent.json")
				}
			}
		}
		return cf, path, nil
	}
	shipped, perr := ParseConfigFile([]byte(ShippedConfigFile))
	if perr != nil {
		return nil, "", perr // the constant is tested; unreachable
	}
	return shipped, "", err
}

func runSystemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// stopProcesses sends SIGTERM to every process but this one whose
// executable is program, waits up to timeout for them to exit, then kills
// the rest. It returns how many it stopped.
func stopProcesses(ctx context.Context, program string, timeout time.Duration) (int, error) {
	want, err := os.Stat(program)
	if err != nil {
		return 0, nil // no binary, nothing can be running it under that name
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("agent: list processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		// Stat through the exe link compares the inode, so a relative or
		// symlinked program path matches too.
		if fi, err := os.Stat(filepath.Join("/proc", e.Name(), "exe")); err == nil && os.SameFile(fi, want) {
			if syscall.Kill(pid, syscall.SIGTERM) == nil {
				pids = append(pids, pid)
			}
		}
	}
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && !zombie(pid) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return len(pids), nil
}

// zombie reports whether pid has exited and waits for its parent to reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// removePins detaches every link pinned under folder and removes every pin
// there, whatever its name: pins of an older version go too. Removing the
// last reference to a link would detach it as well, but only later (the
// kernel frees links asynchronously) and not while a process still holds
// it; an explicit detach takes effect before Uninstall returns. The folder
// must be on a bpffs, so that a misconfigured path never removes ordinary
// files.
func removePins(folder string, rep *UninstallReport) error {
	if folder == "" {
		rep.did("no bpfPinFolder configured: the programs were detached when the agent stopped")
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(folder, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			rep.did("no pins in %s", folder)
			return nil
		}
		return fmt.Errorf("agent: stat pin folder %s: %w", folder, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("agent: pin folder %s is not on a bpffs: not removing anything there", folder)
	}
	var paths []string
	err := filepath.WalkDir(folder, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != folder && !preloaded[d.Name()] {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("agent: list pins: %w", err)
	}
	// Deepest first, so folders are empty when their turn comes.
	var errs []error
	n, detached := 0, 0
	for i := len(paths) - 1; i >= 0; i-- {
		if l, err := link.LoadPinnedLink(paths[i], nil); err == nil {
			if err := l.Detach(); err == nil {
				detached++
			} else if !errors.Is(err, cebpf.ErrNotSupported) {
				errs = append(errs, fmt.Errorf("agent: detach %s: %w", paths[i], err))
			}
			l.Close()
		}
		if err := os.Remove(paths[i]); err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
	}
	// The folder itself may be a mount point; then it stays, empty.
	if err := os.Remove(folder); err != nil && !errors.Is(err, unix.EBUSY) {
		errs = append(errs, err)
	}
	rep.did("detached %d links and removed %d pins under %s", detached, n, folder)
	return errors.Join(errs...)
}

// preloaded are the files the kernel puts at the root of every bpffs mount
// (bpf_preload's iterators): not pins, and not removable.
var preloaded = map[string]bool{"maps.debug": true, "progs.debug": true}

// systemFolders are never removed, whatever the configuration says.
var systemFolders = map[string]bool{
	"/": true, "/etc": true, "/usr": true, "/var": true, "/var/log": true, "/var/lib": true,
	"/tmp": true, "/home": true, "/root": true, "/run": true,
}

func removeTree(dir string, rep *UninstallReport) error {
	dir = filepath.Clean(dir)
	if !filepath.IsAbs(dir) || systemFolders[dir] {
		return fmt.Errorf("%w: %q", ErrUnsafePath, dir)
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	rep.did("removed %s", dir)
	return nil
}

// purge removes the logs and, when MSP is known to be disabled, the keys.
func purge(cf *ConfigFile, rep *UninstallReport) error {
	var errs []error
	statusPath := filepath.Join(cf.StatusFolder, StatusFileName)
	enabled, why := mspEnabled(statusPath)
	if cf.LatchKeyFolder != "" {
		if enabled {
			rep.warn("keys stay in %s: %s. Disable MSP for this VM first, then remove them", cf.LatchKeyFolder, why)
		} else if err := removeTree(cf.LatchKeyFolder, rep); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{cf.LogFolder, cf.StatusFolder} {
		if d == "" {
			continue
		}
		if enabled && cf.LatchKeyFolder != "" && within(cf.LatchKeyFolder, d) {
			rep.warn("%s stays: it holds the key folder %s, which must stay", d, cf.LatchKeyFolder)
			continue
		}
		if err := removeTree(d, rep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// within reports whether path is dir or lies below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// mspEnabled reads status.json and reports whether the keys must stay: true
// unless the file says the secure channel is disabled. Without a readable
// status the answer is unknown, and unknown keeps the keys.
func mspEnabled(statusPath string) (bool, string) {
	st, err := status.ReadFile(statusPath)
	if err != nil {
		return true, fmt.Sprintf("cannot tell whether MSP is enabled for this VM (%v)", err)
	}
	raw := status.KeyLatchStatesFromMap(st.ProxyAgentStatus.KeyLatchStatus.States).SecureChannelState
	ch, err := status.ParseSecureChannel(raw)
	switch {
	case err != nil:
		return true, fmt.Sprintf("cannot tell whether MSP is enabled for this VM (secureChannelState %q: %v)", raw, err)
	case !ch.Known:
		return true, "cannot tell whether MSP is enabled for this VM (secureChannelState Unknown in " + statusPath + ")"
	case ch.Disabled:
		return false, ""
	}
	return true, fmt.Sprintf("MSP is enabled for this VM (%s, %s)", ch, statusPath)
}

// UninstallCommand is `azure-proxy-agent uninstall [--purge] [--keep-files]`:
// it parses args into opts (nil allowed), runs Uninstall and prints its
// report. It returns the exit code: 0 done, 1 an error, 2 bad arguments.
func UninstallCommand(ctx context.Context, args []string, opts *UninstallOptions, stdout, stderr io.Writer) int {
	var o UninstallOptions
	if opts != nil {
		o = *opts
	}
	fs := flag.NewFlagSet("azure-proxy-agent uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.Purge, "purge", o.Purge, "also remove the logs, the configuration and, unless MSP is enabled for the VM, the keys")
	fs.BoolVar(&o.KeepFiles, "keep-files", o.KeepFiles, "leave the installed files (package managers remove their own)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "azure-proxy-agent uninstall: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	rep, err := Uninstall(ctx, &o)
	for _, l := range rep.Done {
		fmt.Fprintln(stdout, l)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintln(stderr, "azure-proxy-agent uninstall:", err)
		return 1
	}
	return 0
}
