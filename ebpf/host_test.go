//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// fakeHost is a machine that passes every check; tests break one thing.
func fakeHost() *host {
	return &host{
		root: fstest.MapFS{
			"proc/sys/kernel/osrelease": {Data: []byte("5.15.0-1057-azure\n")},
			"proc/filesystems":          {Data: []byte("nodev\tcgroup2\n")},
			"proc/self/mountinfo":       {Data: []byte("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")},
			"sys/kernel/btf/vmlinux":    {Data: []byte("btf")},
		},
		haveProgramType:   func(ebpf.ProgramType) error { return nil },
		haveMapType:       func(ebpf.MapType) error { return nil },
		haveProgramHelper: func(ebpf.ProgramType, asm.BuiltinFunc) error { return nil },
	}
}

// The file checks are hostcheck's (tested there); this covers that Load's
// check runs them and the feature probes after them.
func TestHostCheck(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(h *host)
		wantKind error
		wantText []string
	}{
		{"ok", func(*host) {}, nil, nil},
		{"kernel 5.4", func(h *host) {
			h.root.(fstest.MapFS)["proc/sys/kernel/osrelease"].Data = []byte("5.4.0-150-generic")
		}, ErrKernelTooOld, []string{"kernel 5.4.0-150-generic, need 5.15 or later", "upgrade the kernel"}},
		{"cgroup2 not mounted", func(h *host) {
			h.root.(fstest.MapFS)["proc/self/mountinfo"].Data = nil
		}, ErrNoCgroup2, []string{"systemd.unified_cgroup_hierarchy=1"}},
		{"no BTF", func(h *host) { delete(h.root.(fstest.MapFS), "sys/kernel/btf/vmlinux") },
			ErrNoBTF, []string{"CONFIG_DEBUG_INFO_BTF"}},
		{"no sock_ops", func(h *host) {
			h.haveProgramType = func(pt ebpf.ProgramType) error {
				if pt == ebpf.SockOps {
					return fmt.Errorf("probe: %w", ebpf.ErrNotSupported)
				}
				return nil
			}
		}, ErrNotSupported, []string{"program type SockOps", "not supported"}},
		{"no LRU hash", func(h *host) {
			h.haveMapType = func(mt ebpf.MapType) error {
				if mt == ebpf.LRUHash {
					return ebpf.ErrNotSupported
				}
				return nil
			}
		}, ErrNotSupported, []string{"map type LRUHash"}},
		{"no socket storage in sock_ops", func(h *host) {
			h.haveProgramHelper = func(pt ebpf.ProgramType, fn asm.BuiltinFunc) error {
				if pt == ebpf.SockOps && fn == asm.FnSkStorageGet {
					return ebpf.ErrNotSupported
				}
				return nil
			}
		}, ErrNotSupported, []string{"helper bpf_sk_storage_get in SockOps"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost()
			tt.breakIt(h)
			err := h.check()
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("check() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("check() = %v, want %v", err, tt.wantKind)
			}
			var re *RequirementError
			if !errors.As(err, &re) || re.Remediation == "" {
				t.Errorf("check() = %#v, want *RequirementError with a remediation", err)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestUnsupportedFeatureKeepsCause(t *testing.T) {
	h := fakeHost()
	h.haveProgramType = func(ebpf.ProgramType) error { return ebpf.ErrNotSupported }
	err := h.check()
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("check() = %v, want both ErrNotSupported sentinels", err)
	}
}

func TestOpenCgroupErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		name   string
		path   string
		wantIs error
	}{
		{"missing", missing, os.ErrNotExist},
		{"not cgroup", t.TempDir(), ErrNoCgroup2},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := openCgroup(tt.path)
			if err == nil {
				f.Close()
				t.Fatal("openCgroup succeeded")
			}
			var ce *CgroupError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not *CgroupError", err, err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if want := fmt.Sprintf("Failed to open cgroup '%s' with error: ", tt.path); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q lacks prefix %q", err, want)
			}
		})
	}
}
