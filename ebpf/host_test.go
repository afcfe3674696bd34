//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/go-cmp/cmp"
)

func TestParseKernelRelease(t *testing.T) {
	tests := []struct {
		in      string
		want    [2]int
		wantErr bool
	}{
		{"6.18.44-fc-v669", [2]int{6, 18}, false},
		{"5.15.0-1057-azure", [2]int{5, 15}, false},
		{"5.4.0-150-generic", [2]int{5, 4}, false},
		{"4.18.0-553.el8_10.x86_64", [2]int{4, 18}, false},
		{"6.1", [2]int{6, 1}, false},
		{"6.8rc1", [2]int{6, 8}, false},
		{"6", [2]int{}, true},
		{"x.y.z", [2]int{}, true},
		{"", [2]int{}, true},
	}
	for _, tt := range tests {
		got, err := parseKernelRelease(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseKernelRelease(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr {
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseKernelRelease(%q) (-want +got):\n%s", tt.in, diff)
			}
		}
	}
}

const (
	hybridMountinfo = `23 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	unifiedMountinfo = `22 1 8:1 / / rw - ext4 /dev/sda1 rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// A container with a bind-mounted sub-cgroup before the real root.
	nestedMountinfo = `50 1 0:40 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw
51 1 0:40 / /run/gpa\040cg rw - cgroup2 cgroup2 rw
`
	v1OnlyMountinfo = `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
)

func TestFindCgroup2Mount(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{"hybrid", hybridMountinfo, "/sys/fs/cgroup/unified", nil},
		{"unified", unifiedMountinfo, "/sys/fs/cgroup", nil},
		{"sub-cgroup bind mount skipped, escapes decoded", nestedMountinfo, "/run/gpa cg", nil},
		{"v1 only", v1OnlyMountinfo, "", errNoCgroup2Mount},
		{"empty", "", "", errNoCgroup2Mount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findCgroup2Mount(strings.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// fakeHost is a machine that passes every check; tests break one thing.
func fakeHost(t *testing.T) *host {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return &host{
		kernelRelease:   func() (string, error) { return "5.15.0-1057-azure", nil },
		procFilesystems: write("filesystems", "nodev\tsysfs\nnodev\tcgroup\nnodev\tcgroup2\n\text4\n"),
		mountinfo:       write("mountinfo", hybridMountinfo),
		btfPath:         write("vmlinux", "btf"),
		haveProgramType: func(ebpf.ProgramType) error { return nil },
		haveMapType:     func(ebpf.MapType) error { return nil },

		haveProgramHelper: func(ebpf.ProgramType, asm.BuiltinFunc) error { return nil },
	}
}

func TestHostCheck(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(h *host)
		wantKind error
		wantText []string
	}{
		{"ok", func(*host) {}, nil, nil},
		{"kernel 5.4", func(h *host) { h.kernelRelease = func() (string, error) { return "5.4.0-150-generic", nil } },
			ErrKernelTooOld, []string{"kernel 5.4.0-150-generic, need 5.15 or later", "upgrade the kernel"}},
		{"kernel 4.19", func(h *host) { h.kernelRelease = func() (string, error) { return "4.19.0", nil } },
			ErrKernelTooOld, []string{"need 5.15"}},
		{"uname fails", func(h *host) { h.kernelRelease = func() (string, error) { return "", errors.New("boom") } },
			ErrKernelTooOld, []string{"boom"}},
		{"no cgroup2 filesystem", func(h *host) {
			os.WriteFile(h.procFilesystems, []byte("nodev\tcgroup\n"), 0o600)
		}, ErrNoCgroup2, []string{"cgroup2 is not in", "systemd.unified_cgroup_hierarchy=1"}},
		{"cgroup2 not mounted", func(h *host) {
			os.WriteFile(h.mountinfo, []byte(v1OnlyMountinfo), 0o600)
		}, ErrNoCgroup2, []string{"no cgroup2 mount", "systemd.unified_cgroup_hierarchy=1"}},
		{"no BTF", func(h *host) { h.btfPath = filepath.Join(t.TempDir(), "missing") },
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
			h := fakeHost(t)
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
	h := fakeHost(t)
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
