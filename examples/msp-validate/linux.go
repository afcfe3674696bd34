package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metadatasec/gpa/ebpf/hostcheck"
	"github.com/metadatasec/gpa/status"
)

// The agent's files inside the root file system: status's paths without
// the leading slash, as fs.FS paths are written.
var (
	linuxStatusPath = strings.TrimPrefix(status.LinuxStatusPath, "/")
	linuxKeyDir     = strings.TrimPrefix(status.LinuxKeyDir, "/")
)

const (
	agentBinary = "azure-proxy-agent"
	agentUnit   = "azure-proxy-agent.service"
)

// The PATH cloud-init and systemd search, inside the root.
var binDirs = []string{"usr/sbin", "usr/bin", "sbin", "bin", "usr/local/sbin", "usr/local/bin"}

var unitDirs = []string{"etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"}

// Where cloud-init's version module lives across distributions.
var cloudInitVersionGlobs = []string{
	"usr/lib/python3/dist-packages/cloudinit/version.py",
	"usr/lib/python3*/site-packages/cloudinit/version.py",
	"usr/lib/python3*/dist-packages/cloudinit/version.py",
	"usr/local/lib/python3*/dist-packages/cloudinit/version.py",
	"usr/local/lib/python3*/site-packages/cloudinit/version.py",
}

// Minimum from the troubleshooting guide (the kernel's is hostcheck's).
var minCloudInit = version{24, 3}

// The guide's actions, in its words where it has them.
const (
	actionRestartLinux = "systemctl start azure-proxy-agent; read journalctl -u azure-proxy-agent and /var/log/azure-proxy-agent/ProxyAgent.log"
	actionGrubby       = `check with mount | grep cgroup2; if nothing is listed: sudo grubby --update-kernel=ALL --args="systemd.unified_cgroup_hierarchy=1" (or add it to GRUB_CMDLINE_LINUX), then restart the VM`
	// actionUpgradeImage is the guide's three steps for a host the eBPF
	// redirector cannot run on.
	actionUpgradeImage = "opt out of MSP (proxyAgentSettings.enabled=false), upgrade the OS image or kernel to 5.15 or later with cgroup v2 and BTF, then enable MSP again"
	actionKernelOld    = "check with uname -r; " + actionUpgradeImage
	actionNoCgroup2    = "check with grep cgroup /proc/filesystems; " + actionUpgradeImage
	actionInstall      = "the GPA must be part of the image: install the azure-proxy-agent package in it, or add the VM extension Microsoft.CPlat.ProxyAgent.ProxyAgentLinux before you enable MSP"
	actionOffline      = "run msp-validate on the running VM"
	actionCloudInitVer = "find the version with cloud-init --version (or dpkg -s cloud-init, rpm -q cloud-init); 24.3 or later is MSP-aware"
)

// notChecked is the finding of a row that needs the running VM when the
// checks read a disk that is not booted.
const notChecked = "not checked (offline: run on the VM)"

// isOffline tells whether e.Root is a disk that is not running: no live
// queries, and no /sys/kernel (a mounted OS disk has an empty /sys, or none).
func isOffline(e *Env) bool {
	if e.Runner != nil {
		return false
	}
	_, err := fs.Stat(e.Root, "sys/kernel")
	return err != nil
}

func validateLinux(ctx context.Context, e *Env) []status.Finding {
	var out []status.Finding
	out = append(out, checkKernel(e), checkCgroupFS(e), checkCgroupMount(e), checkBTF(e))
	bin := checkBinary(e)
	installed := bin.Severity == ok
	out = append(out, bin, checkUnit(e), checkUnitActive(ctx, e), checkProcess(ctx, e), checkListener(ctx, e, actionRestartLinux))
	ci, civ := checkCloudInit(ctx, e)
	out = append(out, ci)
	statusRows := checkStatusFile(e, linuxStatusPath, "/"+linuxStatusPath, false, isOffline(e))
	rest := append(statusRows, checkStatusMode(e), checkStatusTag(e))
	rest = append(rest, checkKeyDir(e)...)
	// Key and status file modes are not what the agent reports to
	// cloud-init; everything else is.
	unhealthy := worst(out) == fail || worst(statusRows) == fail
	out = append(out, provisioningMatrix(installed, civ, unhealthy))
	return append(out, rest...)
}

// version is a major.minor pair.
type version struct{ major, minor int }

func (v version) less(w version) bool {
	return v.major < w.major || (v.major == w.major && v.minor < w.minor)
}

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

var leadingVersion = regexp.MustCompile(`^(\d+)\.(\d+)`)

// parseVersion reads the major.minor that starts s, such as "6.8" of
// "6.8.0-1015-azure" or "24" "4" of "24.4-0ubuntu1".
func parseVersion(s string) (version, bool) {
	m := leadingVersion.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return version{}, false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	return version{major, minor}, err1 == nil && err2 == nil
}

// The kernel, cgroup2 and btf rows are hostcheck's verdicts, the ones the
// agent's eBPF loader acts on: a row that says OK here means Load gets past
// that check on this host. ErrUnreadable (the file is missing or garbled)
// is a warning, since the host may be fine.

func checkKernel(e *Env) status.Finding {
	const check, action = "kernel", actionKernelOld
	rel, err := hostcheck.Kernel(e.Root)
	switch {
	case err == nil:
		return row(check, ok, "", "kernel %s (5.15 or later)", rel)
	case errors.Is(err, hostcheck.ErrUnreadable) && rel == "" && isOffline(e):
		return row(check, warn, actionOffline+" (uname -r: 5.15 or later)", notChecked)
	case errors.Is(err, hostcheck.ErrUnreadable) && rel == "":
		return row(check, warn, "run on the VM, with /proc mounted", "cannot tell the kernel version: %v", err)
	case errors.Is(err, hostcheck.ErrUnreadable):
		return row(check, warn, "check with uname -r that the kernel is 5.15 or later", "cannot parse kernel release %s", quoted(rel))
	}
	return row(check, fail, action, "kernel %s is older than 5.15", rel)
}

func checkCgroupFS(e *Env) status.Finding {
	const check = "cgroup2.filesystem"
	err := hostcheck.Cgroup2Filesystem(e.Root)
	switch {
	case err == nil:
		return row(check, ok, "", "the kernel supports cgroup2 (nodev cgroup2 in /proc/filesystems)")
	case errors.Is(err, hostcheck.ErrUnreadable) && isOffline(e):
		return row(check, warn, actionOffline+" (grep cgroup /proc/filesystems)", notChecked)
	case errors.Is(err, hostcheck.ErrUnreadable):
		return row(check, warn, "run on the VM, with /proc mounted", "cannot read /proc/filesystems: %v", err)
	}
	return row(check, fail, actionNoCgroup2, "no \"nodev cgroup2\" in /proc/filesystems")
}

func checkCgroupMount(e *Env) status.Finding {
	const check = "cgroup2.mount"
	mnt, err := hostcheck.Cgroup2Root(e.Root)
	switch {
	case errors.Is(err, hostcheck.ErrUnreadable) && isOffline(e):
		return row(check, warn, actionOffline+" (mount | grep cgroup2)", notChecked)
	case errors.Is(err, hostcheck.ErrUnreadable):
		return row(check, warn, "run on the VM, with /proc mounted", "cannot read /proc/self/mountinfo: %v", err)
	case err != nil:
		return row(check, fail, actionGrubby, "cgroup v2 is not mounted (no cgroup2 mount of the hierarchy root in /proc/self/mountinfo)")
	case mnt != "/sys/fs/cgroup":
		// The loader accepts it (hostcheck's verdict); the warning is advice.
		return row(check, warn, `nothing to do for the agent, which finds the cgroup v2 mount; to make cgroup v2 the only hierarchy: sudo grubby --update-kernel=ALL --args="systemd.unified_cgroup_hierarchy=1", then restart the VM`,
			"cgroup v2 is mounted at %s only: a hybrid hierarchy", mnt)
	}
	return row(check, ok, "", "cgroup v2 mounted at %s", mnt)
}

func checkBTF(e *Env) status.Finding {
	const check = "btf"
	if isOffline(e) {
		return row(check, warn, actionOffline+" (ls /sys/kernel/btf/vmlinux)", notChecked)
	}
	if err := hostcheck.BTF(e.Root); err != nil {
		return row(check, fail, "the kernel has no BTF (CONFIG_DEBUG_INFO_BTF=y; the Azure kernels have it): "+actionUpgradeImage, "no kernel BTF at /sys/kernel/btf/vmlinux: the eBPF program cannot be loaded")
	}
	return row(check, ok, "", "kernel BTF present at /sys/kernel/btf/vmlinux")
}

// findBinary returns the path (inside the root) of the agent binary on the
// standard PATH, or "".
func findBinary(e *Env, name string) (string, fs.FileInfo) {
	for _, d := range binDirs {
		p := path.Join(d, name)
		if fi, err := fs.Stat(e.Root, p); err == nil && fi.Mode().IsRegular() {
			return p, fi
		}
	}
	return "", nil
}

func checkBinary(e *Env) status.Finding {
	const check = "agent.binary"
	p, fi := findBinary(e, agentBinary)
	switch {
	case p == "":
		return row(check, fail, actionInstall, "azure-proxy-agent is not installed (not in %s)", "/"+strings.Join(binDirs, ", /"))
	case fi.Mode().Perm()&0o111 == 0:
		return row(check, fail, "chmod 0755 /"+p, "/%s is not executable (mode %04o)", p, fi.Mode().Perm())
	}
	return row(check, ok, "", "/%s", p)
}

func checkUnit(e *Env) status.Finding {
	const check = "agent.unit"
	for _, d := range unitDirs {
		p := path.Join(d, agentUnit)
		if _, err := fs.Stat(e.Root, p); err == nil {
			return row(check, ok, "", "/%s", p)
		}
	}
	return row(check, fail, "reinstall the azure-proxy-agent package, which installs the unit, or add the VM extension Microsoft.CPlat.ProxyAgent.ProxyAgentLinux", "no %s in /%s", agentUnit, strings.Join(unitDirs, ", /"))
}

// commandTimeout bounds each command, to keep the whole run under a second.
const commandTimeout = 400 * time.Millisecond

// cloudInitTimeout bounds cloud-init --version, which starts a Python
// interpreter and imports cloud-init: seconds on a cold cache are normal.
const cloudInitTimeout = 5 * time.Second

func runCommand(ctx context.Context, e *Env, timeout time.Duration, name string, args ...string) (string, error) {
	if e.Runner == nil {
		return "", errNotLive
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := e.Runner.Output(ctx, name, args...)
	return strings.TrimSpace(string(b)), err
}

func checkUnitActive(ctx context.Context, e *Env) status.Finding {
	const check = "agent.service"
	if isOffline(e) {
		return row(check, warn, actionOffline+" (systemctl status azure-proxy-agent)", notChecked)
	}
	out, err := runCommand(ctx, e, commandTimeout, "systemctl", "is-active", agentUnit)
	switch {
	case out == "active":
		return row(check, ok, "", "%s is active", agentUnit)
	case out == "activating" || out == "reloading":
		return row(check, warn, "run again in a few seconds", "%s is %s", agentUnit, out)
	case out != "" && !strings.ContainsAny(out, "\n"):
		return row(check, fail, actionRestartLinux, "%s is %s", agentUnit, out)
	}
	return row(check, warn, "check systemctl status azure-proxy-agent by hand", "cannot ask systemd: %v", err)
}

// mainPID asks systemd for the unit's main process; 0 when it has none or
// systemd cannot be asked.
func mainPID(ctx context.Context, e *Env) int {
	out, err := runCommand(ctx, e, commandTimeout, "systemctl", "show", "--property", "MainPID", "--value", agentUnit)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(out)
	return pid
}

// checkProcess looks for the agent's process: the unit's MainPID when
// systemd can be asked, otherwise a process whose executable or argv[0] is
// the installed binary. A process merely named azure-proxy-agent (a copy in
// /tmp, a test build) is not the agent.
func checkProcess(ctx context.Context, e *Env) status.Finding {
	const check = "agent.process"
	if isOffline(e) {
		return row(check, warn, actionOffline, notChecked)
	}
	if pid := mainPID(ctx, e); pid > 0 {
		if _, err := fs.Stat(e.Root, path.Join("proc", strconv.Itoa(pid))); err == nil {
			return row(check, ok, "", "azure-proxy-agent runs (pid %d, the unit's MainPID)", pid)
		}
	}
	installed := installedPaths(e, agentBinary)
	if len(installed) == 0 {
		return row(check, fail, actionInstall, "no installed azure-proxy-agent binary, so no agent process")
	}
	entries, err := fs.ReadDir(e.Root, "proc")
	if err != nil {
		return row(check, warn, "run on the VM, with /proc mounted", "cannot list /proc: %v", errors.Unwrap(err))
	}
	var pids, strays []string
	for _, ent := range entries {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		dir := path.Join("proc", ent.Name())
		exe, _ := fs.ReadLink(e.Root, path.Join(dir, "exe"))
		b, err := fs.ReadFile(e.Root, path.Join(dir, "cmdline"))
		if err != nil && exe == "" {
			continue // exited meanwhile, or a kernel thread
		}
		argv0, _, _ := bytes.Cut(b, []byte{0})
		switch {
		case slices.Contains(installed, exe) || slices.Contains(installed, string(argv0)):
			pids = append(pids, ent.Name())
		case path.Base(string(argv0)) == agentBinary || path.Base(exe) == agentBinary:
			strays = append(strays, ent.Name())
		}
	}
	if len(pids) == 0 {
		msg := fmt.Sprintf("no process runs %s", strings.Join(installed, " or "))
		if len(strays) > 0 {
			msg += fmt.Sprintf(" (pid %s is named azure-proxy-agent but runs another binary)", strings.Join(strays, ", "))
		}
		return row(check, fail, actionRestartLinux, "%s", msg)
	}
	return row(check, ok, "", "azure-proxy-agent runs (pid %s)", strings.Join(pids, ", "))
}

// installedPaths returns the absolute paths under which the binary is
// installed on the standard PATH: /sbin and /usr/sbin are often one folder.
func installedPaths(e *Env, name string) []string {
	var out []string
	for _, d := range binDirs {
		p := path.Join(d, name)
		if fi, err := fs.Stat(e.Root, p); err == nil && fi.Mode().IsRegular() {
			out = append(out, "/"+p)
		}
	}
	return out
}

var cloudInitVersionLine = regexp.MustCompile(`(?m)^__VERSION__\s*=\s*["']([^"']+)["']`)

// Where a cloud-init installed by pip or a distribution package leaves its
// metadata folder, whose name carries the version: cloud_init-24.4.dist-info.
var cloudInitMetadataGlobs = []string{
	"usr/lib/python3*/site-packages/cloud_init-*-info",
	"usr/lib/python3/dist-packages/cloud_init-*-info",
	"usr/lib/python3*/dist-packages/cloud_init-*-info",
	"usr/local/lib/python3*/dist-packages/cloud_init-*-info",
	"usr/local/lib/python3*/site-packages/cloud_init-*-info",
}

// cloudInitInfo is what is known about cloud-init.
type cloudInitInfo struct {
	found bool    // cloud-init is installed
	known bool    // its version is known
	v     version // the version, when known
	raw   string  // the version as read
	// why says, when the version is unknown, what was tried.
	why string
}

// cloudInitVersion reads the version from cloud-init's version module, its
// package metadata or dpkg's database, and only when none has it runs
// cloud-init --version, which starts a Python interpreter and is slow.
func cloudInitVersion(ctx context.Context, e *Env) (raw string, found bool, why string) {
	for _, g := range cloudInitVersionGlobs {
		matches, _ := fs.Glob(e.Root, g)
		for _, m := range matches {
			b, err := fs.ReadFile(e.Root, m)
			if err != nil {
				continue
			}
			if v := cloudInitVersionLine.FindSubmatch(b); v != nil {
				return string(v[1]), true, ""
			}
		}
	}
	for _, g := range cloudInitMetadataGlobs {
		matches, _ := fs.Glob(e.Root, g)
		for _, m := range matches {
			name := strings.TrimPrefix(path.Base(m), "cloud_init-")
			if v, _, cut := strings.Cut(name, ".dist-info"); cut {
				return v, true, ""
			}
			if v, _, cut := strings.Cut(name, ".egg-info"); cut {
				return strings.Split(v, "-py")[0], true, ""
			}
		}
	}
	if v := dpkgVersion(e, "cloud-init"); v != "" {
		return v, true, ""
	}
	if p, _ := findBinary(e, "cloud-init"); p == "" {
		return "", false, ""
	}
	// "/usr/bin/cloud-init 24.4-0ubuntu1~24.04.2"
	out, err := runCommand(ctx, e, cloudInitTimeout, "cloud-init", "--version")
	if f := strings.Fields(out); err == nil && len(f) > 0 {
		return f[len(f)-1], true, ""
	}
	tried := "no version.py or package metadata under /usr/lib/python3*"
	if err != nil {
		tried += fmt.Sprintf("; cloud-init --version: %v", err)
	}
	return "", true, tried
}

// dpkgVersion reads a package's version from dpkg's status database.
func dpkgVersion(e *Env, pkg string) string {
	b, err := fs.ReadFile(e.Root, "var/lib/dpkg/status")
	if err != nil {
		return ""
	}
	for stanza := range strings.SplitSeq(string(b), "\n\n") {
		var name, ver string
		installed := false
		for line := range strings.Lines(stanza) {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			switch k {
			case "Package":
				name = v
			case "Version":
				ver = v
			case "Status":
				installed = strings.HasSuffix(v, " installed")
			}
		}
		if name == pkg && installed {
			return ver
		}
	}
	return ""
}

func checkCloudInit(ctx context.Context, e *Env) (status.Finding, cloudInitInfo) {
	const check = "cloud-init"
	raw, found, why := cloudInitVersion(ctx, e)
	ci := cloudInitInfo{found: found, raw: raw, why: why}
	if !found {
		return row(check, warn, "MSP provisioning expects cloud-init 24.3 or later; without it, enable MSP only after provisioning", "cloud-init is not installed"), ci
	}
	if raw == "" {
		return row(check, warn, actionCloudInitVer, "cloud-init is installed, its version is unknown (%s)", why), ci
	}
	v, good := parseVersion(raw)
	switch {
	case !good:
		return row(check, warn, actionCloudInitVer, "cloud-init version %s not understood", quoted(raw)), ci
	case v.less(minCloudInit):
		ci.v, ci.known = v, true
		return row(check, warn, "upgrade cloud-init to 24.3 or later", "cloud-init %s is not MSP-aware (24.3 or later is)", raw), ci
	}
	ci.v, ci.known = v, true
	return row(check, ok, "", "cloud-init %s is MSP-aware (24.3 or later)", raw), ci
}

// provisioningMatrix is the guide's table: GPA installed or not, against
// cloud-init older or newer than 24.3, gives the provisioning failure to
// expect when the VM is created with MSP enabled. Its rows are numbered as
// in the guide. unhealthy says another check failed, which row 4 turns into
// cloud-init reporting the GPA unhealthy.
func provisioningMatrix(installed bool, ci cloudInitInfo, unhealthy bool) status.Finding {
	const check = "provisioning"
	switch {
	case !ci.found:
		return row(check, warn, "provision such images with MSP disabled and enable it afterwards", "no cloud-init: the guide's provisioning table does not apply")
	case !ci.known:
		return row(check, warn, actionCloudInitVer, "cloud-init's version is unknown, so which row of the guide's provisioning table applies is unknown")
	}
	newCI := !ci.v.less(minCloudInit)
	switch {
	case installed && newCI && unhealthy:
		return row(check, fail, "fix the failure this report names first", "GPA installed, cloud-init %s: with the failure above, cloud-init reports the GPA unhealthy when a VM is created with MSP enabled (the guide's provisioning table, row 4)", ci.raw)
	case installed && newCI:
		return row(check, ok, "", "GPA installed, cloud-init MSP-aware: provisioning waits for azure-proxy-agent --status --wait 120")
	case installed:
		return row(check, fail, "upgrade cloud-init to 24.3 or later", "GPA installed, cloud-init %s older than 24.3: a race; cloud-init may report ready before the GPA is configured and provisioning fails with Linux.OSProvisioningInternalError, up to 100%% of the time (the guide's provisioning table, row 3)", ci.raw)
	case newCI:
		return row(check, fail, actionInstall, "GPA not installed, cloud-init %s: with MSP enabled, Linux.Cloud-Init fails because azure-proxy-agent is not found (the guide's provisioning table, row 2)", ci.raw)
	}
	return row(check, fail, actionInstall+", and upgrade cloud-init to 24.3 or later", "GPA not installed, cloud-init %s older than 24.3: with MSP enabled, provisioning fails with Linux.OSProvisioningInternalError even though cloud-init reports ready (the guide's provisioning table, row 1)", ci.raw)
}

func checkStatusMode(e *Env) status.Finding {
	const check = "status.file.mode"
	fi, err := fs.Stat(e.Root, linuxStatusPath)
	if err != nil {
		return row(check, warn, "see the status.file row", "no status file to check")
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return row(check, fail, "chmod 0640 /"+linuxStatusPath+"; the agent writes it 0640", "/%s is world-writable (mode %04o): any local user can fake the agent's health", linuxStatusPath, fi.Mode().Perm())
	}
	return row(check, ok, "", "mode %04o, not world-writable", fi.Mode().Perm())
}

// checkStatusTag reads status.tag, the agent's record of how provisioning
// finished: empty on success, one "<module> - <message>" line per part
// that was not ready otherwise.
func checkStatusTag(e *Env) status.Finding {
	const check = "provisioning.tag"
	p := path.Join(linuxKeyDir, status.StatusTagFile)
	b, err := fs.ReadFile(e.Root, p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return row(check, warn, "wait up to 120 s after the agent starts, then run again", "no /%s: provisioning has not finished", p)
	case err != nil:
		return row(check, warn, "run as root", "cannot read /%s: %v", p, errors.Unwrap(err))
	case len(bytes.TrimSpace(b)) == 0:
		return row(check, ok, "", "provisioning finished without error")
	}
	// The agent XML-escapes the text (docs/protocol.md §7.2).
	first, _, _ := strings.Cut(strings.TrimSpace(html.UnescapeString(string(b))), "\n")
	first = strings.TrimSpace(first)
	action := "see the status.* rows for the cause"
	if name, msg, found := strings.Cut(first, " - "); found {
		for _, m := range []status.Module{status.ModuleRedirector, status.ModuleKeyLatch, status.ModuleListener} {
			if m.FieldName() == name {
				if c := status.ClassifyMessage(m, msg); c != status.CauseNone && c != status.CauseOther {
					action = fmt.Sprintf("the %s row says what to do (%s)", "status."+name, c)
				}
			}
		}
	}
	return row(check, fail, action, "provisioning finished with errors: %s", quoted(first))
}

// checkKeyDir checks ownership and modes of the key folder and of every
// file in it, by metadata only: key files are never opened.
func checkKeyDir(e *Env) []status.Finding {
	const dirCheck, fileCheck = "keys.folder", "keys.files"
	fi, err := fs.Stat(e.Root, linuxKeyDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return []status.Finding{row(dirCheck, warn, "nothing to do before the agent's first start; otherwise see the keyLatchStatus row", "no /%s: the agent has not latched a key or finished provisioning", linuxKeyDir)}
	case err != nil:
		return []status.Finding{row(dirCheck, warn, "run as root", "cannot stat /%s: %v", linuxKeyDir, errors.Unwrap(err))}
	case !fi.IsDir():
		return []status.Finding{row(dirCheck, fail, "remove it and restart the agent, which recreates the folder", "/%s is not a folder", linuxKeyDir)}
	}
	var out []status.Finding
	if bad := badOwnerOrMode(fi, 0o700); bad != "" {
		out = append(out, row(dirCheck, fail, "chown root:root /"+linuxKeyDir+"; chmod 0700 /"+linuxKeyDir, "/%s %s", linuxKeyDir, bad))
	} else {
		out = append(out, row(dirCheck, ok, "", "owned by root, mode %04o", fi.Mode().Perm()))
	}
	entries, err := fs.ReadDir(e.Root, linuxKeyDir)
	if err != nil {
		return append(out, row(fileCheck, warn, "run as root", "cannot list /%s: %v", linuxKeyDir, errors.Unwrap(err)))
	}
	var bad []string
	n := 0
	for _, ent := range entries {
		info, err := ent.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		n++
		if why := badOwnerOrMode(info, 0o600); why != "" {
			bad = append(bad, ent.Name()+" "+why)
		}
	}
	if len(bad) > 0 {
		return append(out, row(fileCheck, fail, "chown root:root and chmod 0600 the files in /"+linuxKeyDir+"; if another user could read a key, reset it with msp-keyreset",
			"%s", shorten(strings.Join(bad, "; "), 240)))
	}
	return append(out, row(fileCheck, ok, "", "%d files, all owned by root with no group or other access", n))
}

// badOwnerOrMode says what is wrong with fi for a file that only root may
// use, or "" when nothing is. want is the mode the agent sets; any group
// or other bit is wrong.
func badOwnerOrMode(fi fs.FileInfo, want fs.FileMode) string {
	var why []string
	if uid, known := fileOwner(fi); known && uid != 0 {
		why = append(why, fmt.Sprintf("is owned by uid %d, not root", uid))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		why = append(why, fmt.Sprintf("has mode %04o, want %04o", perm, want))
	}
	return strings.Join(why, " and ")
}
