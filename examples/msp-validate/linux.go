package main

import (
	"bufio"
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

// Minimums from the troubleshooting guide.
var (
	minKernel    = version{5, 15}
	minCloudInit = version{24, 3}
)

const (
	actionRestartLinux = "systemctl start azure-proxy-agent; read journalctl -u azure-proxy-agent and /var/log/azure-proxy-agent/ProxyAgent.log"
	actionGrubby       = `enable cgroup v2: grubby --update-kernel=ALL --args="systemd.unified_cgroup_hierarchy=1" (or add it to GRUB_CMDLINE_LINUX), then reboot`
	actionInstall      = "install the azure-proxy-agent package (bake it into the image), or create the VM with MSP disabled and enable it afterwards"
)

func validateLinux(ctx context.Context, e *Env) []status.Finding {
	var out []status.Finding
	out = append(out, checkKernel(e), checkCgroupFS(e), checkCgroupMount(e), checkBTF(e))
	bin := checkBinary(e)
	installed := bin.Severity == ok
	out = append(out, bin, checkUnit(e), checkUnitActive(ctx, e), checkProcess(e), checkListener(ctx, e, actionRestartLinux))
	ci, ciVer, ciFound := checkCloudInit(ctx, e)
	out = append(out, ci, provisioningMatrix(installed, ciFound, ciVer))
	out = append(out, checkStatusFile(e, linuxStatusPath, "/"+linuxStatusPath, false)...)
	out = append(out, checkStatusMode(e), checkStatusTag(e))
	out = append(out, checkKeyDir(e)...)
	return out
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

func kernelRelease(e *Env) (string, error) {
	if b, err := fs.ReadFile(e.Root, "proc/sys/kernel/osrelease"); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	b, err := fs.ReadFile(e.Root, "proc/version")
	if err != nil {
		return "", err
	}
	// "Linux version 6.8.0-1015-azure (buildd@...) #15 SMP ..."
	f := strings.Fields(string(b))
	if len(f) < 3 || f[0] != "Linux" || f[1] != "version" {
		return "", fmt.Errorf("unexpected /proc/version %s", quoted(string(b)))
	}
	return f[2], nil
}

func checkKernel(e *Env) status.Finding {
	const check, action = "kernel", "upgrade to a kernel of version 5.15 or later (the eBPF redirector needs it)"
	rel, err := kernelRelease(e)
	if err != nil {
		return row(check, warn, "run on the VM, with /proc mounted", "cannot tell the kernel version: %v", err)
	}
	v, good := parseVersion(rel)
	switch {
	case !good:
		return row(check, warn, "check that the kernel is 5.15 or later", "cannot parse kernel release %s", quoted(rel))
	case v.less(minKernel):
		return row(check, fail, action, "kernel %s is older than %s", rel, minKernel)
	}
	return row(check, ok, "", "kernel %s (%s or later)", rel, minKernel)
}

func checkCgroupFS(e *Env) status.Finding {
	const check = "cgroup2.filesystem"
	b, err := fs.ReadFile(e.Root, "proc/filesystems")
	if err != nil {
		return row(check, warn, "run on the VM, with /proc mounted", "cannot read /proc/filesystems: %v", errors.Unwrap(err))
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nodev" && f[1] == "cgroup2" {
			return row(check, ok, "", "the kernel supports cgroup2 (nodev cgroup2 in /proc/filesystems)")
		}
	}
	return row(check, fail, "use a kernel built with cgroup v2 support (5.15 or later)", "no \"nodev cgroup2\" in /proc/filesystems")
}

// cgroup2Mounts returns the mount points of cgroup2 file systems listed in
// mountinfo. The file system type follows the " - " separator; the mount
// point is the fifth field.
func cgroup2Mounts(mountinfo []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		line := sc.Text()
		pre, post, found := strings.Cut(line, " - ")
		if !found {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// unescapeMount undoes the octal escapes of spaces and tabs in mountinfo.
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func checkCgroupMount(e *Env) status.Finding {
	const check = "cgroup2.mount"
	b, err := fs.ReadFile(e.Root, "proc/self/mountinfo")
	if err != nil {
		return row(check, warn, "run on the VM, with /proc mounted", "cannot read /proc/self/mountinfo: %v", errors.Unwrap(err))
	}
	mounts := cgroup2Mounts(b)
	switch {
	case len(mounts) == 0:
		return row(check, fail, actionGrubby, "cgroup v2 is not mounted (no cgroup2 in /proc/self/mountinfo)")
	case !slices.Contains(mounts, "/sys/fs/cgroup"):
		return row(check, warn, actionGrubby, "cgroup v2 is mounted at %s only: a hybrid hierarchy", strings.Join(mounts, ", "))
	}
	return row(check, ok, "", "cgroup v2 mounted at /sys/fs/cgroup")
}

func checkBTF(e *Env) status.Finding {
	const check = "btf"
	if _, err := fs.Stat(e.Root, "sys/kernel/btf/vmlinux"); err != nil {
		return row(check, fail, "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the Azure kernels are)", "no kernel BTF at /sys/kernel/btf/vmlinux: the eBPF program cannot be loaded")
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
		return row(check, fail, actionInstall, "azure-proxy-agent is not on PATH (%s)", "/"+strings.Join(binDirs, ":/"))
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
	return row(check, fail, actionInstall+"; the package installs the unit", "no %s in /%s", agentUnit, strings.Join(unitDirs, ", /"))
}

// commandTimeout bounds each command, to keep the whole run under a second.
const commandTimeout = 400 * time.Millisecond

func runCommand(ctx context.Context, e *Env, name string, args ...string) (string, error) {
	if e.Runner == nil {
		return "", errNotLive
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	b, err := e.Runner.Output(ctx, name, args...)
	return strings.TrimSpace(string(b)), err
}

func checkUnitActive(ctx context.Context, e *Env) status.Finding {
	const check = "agent.service"
	out, err := runCommand(ctx, e, "systemctl", "is-active", agentUnit)
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

// checkProcess looks for a process whose argv[0] is the agent, through
// /proc under the root. It reads cmdline rather than comm, which the kernel
// cuts to 15 characters.
func checkProcess(e *Env) status.Finding {
	const check = "agent.process"
	entries, err := fs.ReadDir(e.Root, "proc")
	if err != nil {
		return row(check, warn, "run on the VM, with /proc mounted", "cannot list /proc: %v", errors.Unwrap(err))
	}
	var pids []string
	for _, ent := range entries {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		b, err := fs.ReadFile(e.Root, path.Join("proc", ent.Name(), "cmdline"))
		if err != nil {
			continue // exited meanwhile, or a kernel thread
		}
		argv0, _, _ := bytes.Cut(b, []byte{0})
		if path.Base(string(argv0)) == agentBinary {
			pids = append(pids, ent.Name())
		}
	}
	if len(pids) == 0 {
		return row(check, fail, actionRestartLinux, "no azure-proxy-agent process")
	}
	return row(check, ok, "", "azure-proxy-agent runs (pid %s)", strings.Join(pids, ", "))
}

var cloudInitVersionLine = regexp.MustCompile(`(?m)^__VERSION__\s*=\s*["']([^"']+)["']`)

// cloudInitVersion reads the version from cloud-init's version module, and
// only when that is not found runs cloud-init --version, which starts a
// Python interpreter and is slow.
func cloudInitVersion(ctx context.Context, e *Env) (string, bool) {
	for _, g := range cloudInitVersionGlobs {
		matches, _ := fs.Glob(e.Root, g)
		for _, m := range matches {
			b, err := fs.ReadFile(e.Root, m)
			if err != nil {
				continue
			}
			if v := cloudInitVersionLine.FindSubmatch(b); v != nil {
				return string(v[1]), true
			}
		}
	}
	if p, _ := findBinary(e, "cloud-init"); p == "" {
		return "", false
	}
	// "/usr/bin/cloud-init 24.4-0ubuntu1~24.04.2"
	out, err := runCommand(ctx, e, "cloud-init", "--version")
	if f := strings.Fields(out); err == nil && len(f) > 0 {
		return f[len(f)-1], true
	}
	return "unknown", true
}

func checkCloudInit(ctx context.Context, e *Env) (status.Finding, version, bool) {
	const check = "cloud-init"
	raw, found := cloudInitVersion(ctx, e)
	if !found {
		return row(check, warn, "MSP provisioning expects cloud-init 24.3 or later; without it, enable MSP only after provisioning", "cloud-init is not installed"), version{}, false
	}
	v, good := parseVersion(raw)
	switch {
	case !good:
		return row(check, warn, "check that cloud-init is 24.3 or later", "cloud-init version %s not understood", quoted(raw)), version{}, true
	case v.less(minCloudInit):
		return row(check, warn, "upgrade cloud-init to 24.3 or later", "cloud-init %s is not MSP-aware (24.3 or later is)", raw), v, true
	}
	return row(check, ok, "", "cloud-init %s is MSP-aware (24.3 or later)", raw), v, true
}

// provisioningMatrix is the guide's table: GPA installed or not, against
// cloud-init older or newer than 24.3, gives the provisioning failure to
// expect when the VM is created with MSP enabled.
func provisioningMatrix(installed, cloudInitFound bool, ci version) status.Finding {
	const check = "provisioning"
	if !cloudInitFound {
		return row(check, warn, "provision such images with MSP disabled and enable it afterwards", "no cloud-init: the guide's provisioning matrix does not apply")
	}
	newCI := ci != version{} && !ci.less(minCloudInit)
	switch {
	case installed && newCI:
		return row(check, ok, "", "GPA installed, cloud-init MSP-aware: provisioning waits for azure-proxy-agent --status --wait 120")
	case installed:
		return row(check, fail, "upgrade cloud-init to 24.3 or later", "GPA installed, cloud-init older than 24.3: cloud-init may report ready before the GPA is configured, and provisioning fails (up to 100%% of the time)")
	case newCI:
		return row(check, fail, actionInstall, "GPA not installed, cloud-init 24.3 or later: provisioning with MSP enabled fails with \"azure-proxy-agent not found\"")
	}
	return row(check, fail, "install azure-proxy-agent in the image and upgrade cloud-init to 24.3 or later", "GPA not installed, cloud-init older than 24.3: provisioning with MSP enabled fails with Linux.OSProvisioningInternalError, even though cloud-init may report ready")
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
	// The agent XML-escapes the text (gpa-protocol §7.2).
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
