// Package hostcheck decides whether a Linux host can run the MSP eBPF
// redirector: Linux 5.15 or later, cgroup v2 mounted at the root of its
// hierarchy, and kernel BTF. ebpf.Load runs it before loading anything, and
// msp-validate shows its verdict row by row, so both judge a host the same
// way.
//
// It only reads files, from a root given as an fs.FS: os.DirFS("/") on the
// running machine, a mounted disk's root offline, a fstest.MapFS in tests.
// It builds on every platform so a Windows machine can judge a Linux disk.
package hostcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// Sentinel errors; *RequirementError wraps them. The texts keep the "ebpf:"
// prefix they had when package ebpf defined them, which re-exports them.
var (
	// ErrKernelTooOld means the kernel is older than 5.15.
	ErrKernelTooOld = errors.New("ebpf: kernel too old")
	// ErrNoCgroup2 means cgroup v2 is not supported or not mounted at the
	// root of its hierarchy.
	ErrNoCgroup2 = errors.New("ebpf: cgroup v2 not available")
	// ErrNoBTF means the kernel does not expose BTF.
	ErrNoBTF = errors.New("ebpf: kernel BTF not available")
	// ErrUnreadable means the file that decides a requirement could not
	// be read or understood: the host may be fine, but this check cannot
	// say. It comes wrapped with the requirement's sentinel.
	ErrUnreadable = errors.New("cannot tell")
)

// Remediations, in the MSP troubleshooting guide's words.
const (
	RemedyKernel  = "upgrade the kernel to Linux 5.15 or later"
	RemedyCgroup2 = "mount cgroup v2: boot with systemd.unified_cgroup_hierarchy=1 " +
		`(RHEL-like images: grubby --update-kernel=ALL --args="systemd.unified_cgroup_hierarchy=1", then reboot)`
	RemedyBTF = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (/sys/kernel/btf/vmlinux)"
)

// The oldest kernel MSP supports (docs/protocol.md §5.5).
const minMajor, minMinor = 5, 15

// The files read, relative to the root.
const (
	osreleasePath   = "proc/sys/kernel/osrelease"
	versionPath     = "proc/version"
	filesystemsPath = "proc/filesystems"
	mountinfoPath   = "proc/self/mountinfo"
	btfPath         = "sys/kernel/btf/vmlinux"
)

// RequirementError reports a host that cannot run the redirector, or one
// this package cannot judge (errors.Is ErrUnreadable). errors.Is matches
// Kind and Err.
type RequirementError struct {
	// Kind is the sentinel naming the requirement: ErrKernelTooOld,
	// ErrNoCgroup2, ErrNoBTF (or ebpf.ErrNotSupported for the feature
	// probes package ebpf adds).
	Kind error
	// Detail says what was found, for example "kernel 5.4.0".
	Detail string
	// Remediation tells the user how to fix the host.
	Remediation string
	// Err is the underlying cause, if any.
	Err error
}

// Error says what is missing and how to fix it.
func (e *RequirementError) Error() string {
	var b strings.Builder
	b.WriteString(strings.TrimPrefix(e.Kind.Error(), "ebpf: "))
	if e.Detail != "" {
		b.WriteString(" (" + e.Detail + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Remediation != "" {
		b.WriteString("; " + e.Remediation)
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause.
func (e *RequirementError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func unreadable(err error) error { return fmt.Errorf("%w: %w", ErrUnreadable, err) }

// Check runs every check below in order and returns the first failure, a
// *RequirementError, or nil when the host can run the redirector.
func Check(root fs.FS) error {
	if _, err := Kernel(root); err != nil {
		return err
	}
	if err := Cgroup2Filesystem(root); err != nil {
		return err
	}
	if _, err := Cgroup2Root(root); err != nil {
		return err
	}
	return BTF(root)
}

// Kernel returns the kernel release (proc/sys/kernel/osrelease, or the
// third word of proc/version) and an error unless it is 5.15 or later. The
// release is returned whenever it could be read, also with an error.
func Kernel(root fs.FS) (string, error) {
	rel, err := kernelRelease(root)
	if err != nil {
		return "", &RequirementError{Kind: ErrKernelTooOld, Detail: "cannot read the kernel release", Err: unreadable(err), Remediation: RemedyKernel}
	}
	major, minor, err := ParseKernelRelease(rel)
	if err != nil {
		return rel, &RequirementError{Kind: ErrKernelTooOld, Detail: "kernel " + rel, Err: unreadable(err), Remediation: RemedyKernel}
	}
	if major < minMajor || major == minMajor && minor < minMinor {
		return rel, &RequirementError{Kind: ErrKernelTooOld, Detail: fmt.Sprintf("kernel %s, need %d.%d or later", rel, minMajor, minMinor), Remediation: RemedyKernel}
	}
	return rel, nil
}

func kernelRelease(root fs.FS) (string, error) {
	if b, err := fs.ReadFile(root, osreleasePath); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	b, err := fs.ReadFile(root, versionPath)
	if err != nil {
		return "", err
	}
	// "Linux version 6.8.0-1015-azure (buildd@...) #15 SMP ..."
	f := strings.Fields(string(b))
	if len(f) < 3 || f[0] != "Linux" || f[1] != "version" {
		return "", fmt.Errorf("unexpected /%s %q", versionPath, strings.TrimSpace(string(b)))
	}
	return f[2], nil
}

// ParseKernelRelease extracts major and minor from a release string such as
// "6.18.44-fc-v669" or "5.15.0-1057-azure".
func ParseKernelRelease(rel string) (major, minor int, err error) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("unparseable kernel release %q", rel)
	}
	var v [2]int
	for i := range v {
		digits := parts[i]
		if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			digits = digits[:j]
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return 0, 0, fmt.Errorf("unparseable kernel release %q", rel)
		}
		v[i] = n
	}
	return v[0], v[1], nil
}

// Cgroup2Filesystem reports whether the kernel supports cgroup v2: cgroup2
// is listed in proc/filesystems.
func Cgroup2Filesystem(root fs.FS) error {
	b, err := fs.ReadFile(root, filesystemsPath)
	if err != nil {
		return &RequirementError{Kind: ErrNoCgroup2, Detail: "cannot read /" + filesystemsPath, Err: unreadable(err), Remediation: RemedyCgroup2}
	}
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) > 0 && string(f[len(f)-1]) == "cgroup2" {
			return nil
		}
	}
	return &RequirementError{Kind: ErrNoCgroup2, Detail: "cgroup2 is not in /" + filesystemsPath, Remediation: RemedyCgroup2}
}

var errNoCgroup2Mount = errors.New("no cgroup2 mount of the hierarchy root")

// Cgroup2Root returns where the root of the cgroup v2 hierarchy is mounted,
// from proc/self/mountinfo (on hybrid layouts that is often
// /sys/fs/cgroup/unified). Only a mount of the hierarchy's root counts: a
// bind mount of a sub-cgroup (as in a container) would attach below it.
func Cgroup2Root(root fs.FS) (string, error) {
	f, err := root.Open(mountinfoPath)
	if err != nil {
		return "", &RequirementError{Kind: ErrNoCgroup2, Detail: "cannot read /" + mountinfoPath, Err: unreadable(err), Remediation: RemedyCgroup2}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		rf, lf := strings.Fields(right), strings.Fields(left)
		if len(rf) < 1 || rf[0] != "cgroup2" || len(lf) < 5 {
			continue
		}
		if UnescapeMountinfo(lf[3]) != "/" {
			continue
		}
		return UnescapeMountinfo(lf[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", &RequirementError{Kind: ErrNoCgroup2, Detail: "cannot read /" + mountinfoPath, Err: unreadable(err), Remediation: RemedyCgroup2}
	}
	return "", &RequirementError{Kind: ErrNoCgroup2, Detail: "/" + mountinfoPath, Err: errNoCgroup2Mount, Remediation: RemedyCgroup2}
}

// UnescapeMountinfo undoes the kernel's octal escapes (\040 for space, and
// so on) in mountinfo paths.
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// BTF reports whether the kernel exposes its BTF at sys/kernel/btf/vmlinux,
// which the programs' CO-RE relocations are resolved against.
func BTF(root fs.FS) error {
	if _, err := fs.Stat(root, btfPath); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			err = unreadable(err)
		}
		return &RequirementError{Kind: ErrNoBTF, Detail: "/" + btfPath, Err: err, Remediation: RemedyBTF}
	}
	return nil
}
