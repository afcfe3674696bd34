package hostcheck

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"

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
		major, minor, err := ParseKernelRelease(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseKernelRelease(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, [2]int{major, minor}); diff != "" && !tt.wantErr {
			t.Errorf("ParseKernelRelease(%q) (-want +got):\n%s", tt.in, diff)
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
	// Only a sub-cgroup is visible: attaching there would not cover the
	// host.
	subOnlyMountinfo = `50 1 0:40 /kubepods/pod1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw
`
	v1OnlyMountinfo = `32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
	filesystems   = "nodev\tsysfs\nnodev\tcgroup\nnodev\tcgroup2\n\text4\n"
	procVersion   = "Linux version 6.8.0-1015-azure (buildd@lcy02-amd64-046) (gcc 12.3.0) #15 SMP Tue Sep 10 2024\n"
	oldKernelText = "Linux version 5.4.0-150-generic (buildd@bos03) #167 SMP\n"
)

// goodHost is a host that passes every check; tests change one file.
func goodHost() fstest.MapFS {
	return fstest.MapFS{
		"proc/sys/kernel/osrelease": {Data: []byte("5.15.0-1057-azure\n")},
		"proc/filesystems":          {Data: []byte(filesystems)},
		"proc/self/mountinfo":       {Data: []byte(hybridMountinfo)},
		"sys/kernel/btf/vmlinux":    {Data: []byte("btf")},
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(fstest.MapFS)
		wantKind   error
		unreadable bool
		wantText   []string
	}{
		{name: "healthy, hybrid layout", edit: func(fstest.MapFS) {}},
		{name: "unified layout", edit: func(m fstest.MapFS) { m["proc/self/mountinfo"].Data = []byte(unifiedMountinfo) }},
		{name: "release from /proc/version", edit: func(m fstest.MapFS) {
			delete(m, "proc/sys/kernel/osrelease")
			m["proc/version"] = &fstest.MapFile{Data: []byte(procVersion)}
		}},
		{name: "kernel 5.4", edit: func(m fstest.MapFS) { m["proc/sys/kernel/osrelease"].Data = []byte("5.4.0-150-generic\n") },
			wantKind: ErrKernelTooOld, wantText: []string{"kernel 5.4.0-150-generic, need 5.15 or later", "upgrade the kernel"}},
		{name: "kernel 4.19 from /proc/version", edit: func(m fstest.MapFS) {
			delete(m, "proc/sys/kernel/osrelease")
			m["proc/version"] = &fstest.MapFile{Data: []byte(oldKernelText)}
		}, wantKind: ErrKernelTooOld, wantText: []string{"5.4.0-150-generic"}},
		{name: "no kernel release at all", edit: func(m fstest.MapFS) { delete(m, "proc/sys/kernel/osrelease") },
			wantKind: ErrKernelTooOld, unreadable: true, wantText: []string{"cannot read the kernel release"}},
		{name: "garbled release", edit: func(m fstest.MapFS) { m["proc/sys/kernel/osrelease"].Data = []byte("linux\n") },
			wantKind: ErrKernelTooOld, unreadable: true, wantText: []string{`unparseable kernel release "linux"`}},
		{name: "no cgroup2 filesystem", edit: func(m fstest.MapFS) { m["proc/filesystems"].Data = []byte("nodev\tcgroup\n") },
			wantKind: ErrNoCgroup2, wantText: []string{"cgroup2 is not in", "systemd.unified_cgroup_hierarchy=1"}},
		{name: "no /proc/filesystems", edit: func(m fstest.MapFS) { delete(m, "proc/filesystems") },
			wantKind: ErrNoCgroup2, unreadable: true},
		{name: "cgroup2 not mounted", edit: func(m fstest.MapFS) { m["proc/self/mountinfo"].Data = []byte(v1OnlyMountinfo) },
			wantKind: ErrNoCgroup2, wantText: []string{"no cgroup2 mount of the hierarchy root", "systemd.unified_cgroup_hierarchy=1"}},
		{name: "only a sub-cgroup mounted", edit: func(m fstest.MapFS) { m["proc/self/mountinfo"].Data = []byte(subOnlyMountinfo) },
			wantKind: ErrNoCgroup2, wantText: []string{"no cgroup2 mount of the hierarchy root"}},
		{name: "no mountinfo", edit: func(m fstest.MapFS) { delete(m, "proc/self/mountinfo") },
			wantKind: ErrNoCgroup2, unreadable: true},
		{name: "no BTF", edit: func(m fstest.MapFS) { delete(m, "sys/kernel/btf/vmlinux") },
			wantKind: ErrNoBTF, wantText: []string{"CONFIG_DEBUG_INFO_BTF"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := goodHost()
			tt.edit(root)
			err := Check(root)
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("Check = %v, want %v", err, tt.wantKind)
			}
			if got := errors.Is(err, ErrUnreadable); got != tt.unreadable {
				t.Errorf("errors.Is(%v, ErrUnreadable) = %v, want %v", err, got, tt.unreadable)
			}
			var re *RequirementError
			if !errors.As(err, &re) || re.Remediation == "" {
				t.Errorf("Check = %#v, want *RequirementError with a remediation", err)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestCgroup2Root(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"hybrid", hybridMountinfo, "/sys/fs/cgroup/unified"},
		{"unified", unifiedMountinfo, "/sys/fs/cgroup"},
		{"sub-cgroup bind mount skipped, escapes decoded", nestedMountinfo, "/run/gpa cg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Cgroup2Root(fstest.MapFS{"proc/self/mountinfo": {Data: []byte(tt.in)}})
			if err != nil || got != tt.want {
				t.Errorf("Cgroup2Root = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestKernelReturnsReleaseWithVerdict(t *testing.T) {
	root := goodHost()
	root["proc/sys/kernel/osrelease"].Data = []byte("5.10.0-28-cloud-amd64\n")
	rel, err := Kernel(root)
	if rel != "5.10.0-28-cloud-amd64" || !errors.Is(err, ErrKernelTooOld) {
		t.Errorf("Kernel = %q, %v; want the release and ErrKernelTooOld", rel, err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:         "/plain",
		`/a\040b`:        "/a b",
		`/tab\011x`:      "/tab\tx",
		`/back\134slash`: `/back\slash`,
		`/short\04`:      `/short\04`,
	} {
		if got := UnescapeMountinfo(in); got != want {
			t.Errorf("UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// The running machine, read the way Load reads it: a smoke test that the
// real files parse (the verdict itself depends on the machine).
func TestRealRootParses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no /proc to read on " + runtime.GOOS)
	}
	if err := Check(os.DirFS("/")); errors.Is(err, ErrUnreadable) {
		t.Errorf("Check(/) cannot read this machine: %v", err)
	}
}
