//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// minKernel is the oldest kernel MSP supports (docs/protocol.md §5.5).
var minKernel = [2]int{5, 15}

// host is where Load looks at the machine. Production uses realHost; tests
// in this package replace single fields to force each failure path without
// a different kernel.
type host struct {
	kernelRelease   func() (string, error)
	procFilesystems string
	mountinfo       string
	btfPath         string
	haveProgramType func(ebpf.ProgramType) error
	haveMapType     func(ebpf.MapType) error
	// haveProgramHelper reports whether programs of a type may call a
	// helper.
	haveProgramHelper func(ebpf.ProgramType, asm.BuiltinFunc) error
	// editSpec, when set, changes the object before loading (tests only).
	editSpec func(*ebpf.CollectionSpec)
}

func realHost() *host {
	return &host{
		kernelRelease: func() (string, error) {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return "", err
			}
			return unix.ByteSliceToString(u.Release[:]), nil
		},
		procFilesystems: "/proc/filesystems",
		mountinfo:       "/proc/self/mountinfo",
		btfPath:         "/sys/kernel/btf/vmlinux",
		haveProgramType: features.HaveProgramType,
		haveMapType:     features.HaveMapType,

		haveProgramHelper: features.HaveProgramHelper,
	}
}

// CheckKernel reports whether this machine can run the redirector: kernel
// 5.15 or later, cgroup v2 available and mounted, kernel BTF, and the
// program and map types the redirector loads. Load runs the same checks;
// the agent can call CheckKernel alone to report readiness early. Failures
// are *RequirementError.
func CheckKernel() error { return realHost().check() }

func (h *host) check() error {
	rel, err := h.kernelRelease()
	if err != nil {
		return &RequirementError{Kind: ErrKernelTooOld, Detail: "cannot read kernel release", Err: err, Remediation: remedyKernel}
	}
	v, err := parseKernelRelease(rel)
	if err != nil {
		return &RequirementError{Kind: ErrKernelTooOld, Detail: "kernel " + rel, Err: err, Remediation: remedyKernel}
	}
	if v[0] < minKernel[0] || v[0] == minKernel[0] && v[1] < minKernel[1] {
		return &RequirementError{Kind: ErrKernelTooOld, Detail: fmt.Sprintf("kernel %s, need %d.%d or later", rel, minKernel[0], minKernel[1]), Remediation: remedyKernel}
	}

	fs, err := os.ReadFile(h.procFilesystems)
	if err != nil {
		return &RequirementError{Kind: ErrNoCgroup2, Detail: "cannot read " + h.procFilesystems, Err: err, Remediation: remedyCgroup2}
	}
	if !hasFilesystem(fs, "cgroup2") {
		return &RequirementError{Kind: ErrNoCgroup2, Detail: "cgroup2 is not in " + h.procFilesystems, Remediation: remedyCgroup2}
	}
	if _, err := h.cgroup2Root(); err != nil {
		return err
	}

	if _, err := os.Stat(h.btfPath); err != nil {
		return &RequirementError{Kind: ErrNoBTF, Detail: h.btfPath, Err: err, Remediation: remedyBTF}
	}

	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.SockOps} {
		if err := h.haveProgramType(pt); err != nil {
			return &RequirementError{Kind: ErrNotSupported, Detail: "program type " + pt.String(), Err: err, Remediation: remedyFeature}
		}
	}
	for _, mt := range []ebpf.MapType{ebpf.Hash, ebpf.LRUHash, ebpf.SkStorage} {
		if err := h.haveMapType(mt); err != nil {
			return &RequirementError{Kind: ErrNotSupported, Detail: "map type " + mt.String(), Err: err, Remediation: remedyFeature}
		}
	}
	// Socket storage from the connect, getpeername and sock_ops hooks.
	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.SockOps} {
		if err := h.haveProgramHelper(pt, asm.FnSkStorageGet); err != nil {
			return &RequirementError{Kind: ErrNotSupported, Detail: "helper bpf_sk_storage_get in " + pt.String(), Err: err, Remediation: remedyFeature}
		}
	}
	return nil
}

// parseKernelRelease extracts major and minor from a release string such as
// "6.18.44-fc-v669" or "5.15.0-1057-azure".
func parseKernelRelease(rel string) ([2]int, error) {
	var v [2]int
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return v, fmt.Errorf("unparseable kernel release %q", rel)
	}
	for i := range v {
		digits := parts[i]
		if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			digits = digits[:j]
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return v, fmt.Errorf("unparseable kernel release %q", rel)
		}
		v[i] = n
	}
	return v, nil
}

func hasFilesystem(procFilesystems []byte, name string) bool {
	for line := range bytes.Lines(procFilesystems) {
		f := bytes.Fields(line)
		if len(f) > 0 && string(f[len(f)-1]) == name {
			return true
		}
	}
	return false
}

// CgroupV2Root returns the mount point of the cgroup v2 hierarchy, read
// from /proc/self/mountinfo (on hybrid layouts that is often
// /sys/fs/cgroup/unified). It is what the agent passes as
// Options.CgroupPath.
func CgroupV2Root() (string, error) { return realHost().cgroup2Root() }

func (h *host) cgroup2Root() (string, error) {
	f, err := os.Open(h.mountinfo)
	if err != nil {
		return "", &RequirementError{Kind: ErrNoCgroup2, Detail: "cannot read " + h.mountinfo, Err: err, Remediation: remedyCgroup2}
	}
	defer f.Close()
	mnt, err := findCgroup2Mount(f)
	if err != nil {
		return "", &RequirementError{Kind: ErrNoCgroup2, Detail: h.mountinfo, Err: err, Remediation: remedyCgroup2}
	}
	return mnt, nil
}

var errNoCgroup2Mount = errors.New("no cgroup2 mount")

// findCgroup2Mount returns the first cgroup2 mount point in a
// /proc/<pid>/mountinfo stream. Only mounts of the hierarchy's root ("/")
// count: a bind mount of a sub-cgroup would attach below the root.
func findCgroup2Mount(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
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
		if unescapeMountinfo(lf[3]) != "/" {
			continue
		}
		return unescapeMountinfo(lf[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errNoCgroup2Mount
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, and
// so on) in mountinfo paths.
func unescapeMountinfo(s string) string {
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

// openCgroup opens dir and checks that it is a cgroup v2 directory.
func openCgroup(dir string) (*os.File, uint64, error) {
	if dir == "" {
		return nil, 0, &CgroupError{Path: dir, Err: errors.New("no cgroup path given")}
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, 0, &CgroupError{Path: dir, Err: err}
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		f.Close()
		return nil, 0, &CgroupError{Path: dir, Err: err}
	}
	if sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		f.Close()
		return nil, 0, &CgroupError{Path: dir, Err: fmt.Errorf("%w: not a cgroup v2 directory (filesystem magic %#x)", ErrNoCgroup2, sfs.Type)}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, 0, &CgroupError{Path: dir, Err: err}
	}
	// The cgroup id the kernel reports (bpf_get_current_cgroup_id, link
	// info) is the directory's inode number.
	return f, st.Ino, nil
}
