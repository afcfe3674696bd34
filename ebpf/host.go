//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/metadatasec/gpa/ebpf/hostcheck"
)

// host is where Load looks at the machine. Production uses realHost; tests
// in this package replace single fields to force each failure path without
// a different kernel.
type host struct {
	// root is the file system hostcheck reads.
	root            fs.FS
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
		root:              os.DirFS("/"),
		haveProgramType:   features.HaveProgramType,
		haveMapType:       features.HaveMapType,
		haveProgramHelper: features.HaveProgramHelper,
	}
}

// CheckKernel reports whether this machine can run the redirector:
// hostcheck's verdict (kernel 5.15 or later, cgroup v2 mounted at its
// hierarchy root, kernel BTF), then the program and map types and helpers
// the redirector loads. Load runs the same checks; the agent can call
// CheckKernel alone to report readiness early. Failures are
// *RequirementError.
func CheckKernel() error { return realHost().check() }

func (h *host) check() error {
	if err := hostcheck.Check(h.root); err != nil {
		return err
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

// CgroupV2Root returns the mount point of the cgroup v2 hierarchy, read
// from /proc/self/mountinfo (on hybrid layouts that is often
// /sys/fs/cgroup/unified). It is what the agent passes as
// Options.CgroupPath.
func CgroupV2Root() (string, error) { return hostcheck.Cgroup2Root(os.DirFS("/")) }

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
