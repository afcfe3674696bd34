package main

import (
	"errors"
	"testing"
	"testing/fstest"

	"github.com/metadatasec/gpa/ebpf/hostcheck"
	"github.com/metadatasec/gpa/status"
)

// The kernel, cgroup2 and btf rows give the eBPF loader's verdict: no FAIL
// when hostcheck.Check (what ebpf.Load runs first) passes (a hybrid layout
// is a warning with advice), a FAIL when it fails for a reason the files
// show, and never all OK when it cannot tell.
func TestHostRowsAgreeWithLoader(t *testing.T) {
	base := func() fstest.MapFS {
		return fstest.MapFS{
			"proc/sys/kernel/osrelease": {Data: []byte("6.8.0-1015-azure\n")},
			"proc/filesystems":          {Data: []byte("nodev\tcgroup\nnodev\tcgroup2\n")},
			"proc/self/mountinfo":       {Data: []byte("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")},
			"sys/kernel/btf/vmlinux":    {Data: []byte("btf")},
			// A booted host has /sys/kernel, so the rows are not offline.
			"sys/kernel/notes": {Data: []byte{}},
		}
	}
	tests := []struct {
		name string
		edit func(fstest.MapFS)
	}{
		{"healthy hybrid layout", func(fstest.MapFS) {}},
		{"healthy unified layout", func(m fstest.MapFS) {
			m["proc/self/mountinfo"].Data = []byte("26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
		}},
		{"old kernel", func(m fstest.MapFS) { m["proc/sys/kernel/osrelease"].Data = []byte("5.4.0-150-generic") }},
		{"garbled kernel release", func(m fstest.MapFS) { m["proc/sys/kernel/osrelease"].Data = []byte("linux") }},
		{"no cgroup2 support", func(m fstest.MapFS) { m["proc/filesystems"].Data = []byte("nodev\tcgroup\n") }},
		{"only a sub-cgroup mounted", func(m fstest.MapFS) {
			m["proc/self/mountinfo"].Data = []byte("50 1 0:40 /kubepods /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n")
		}},
		{"no mountinfo", func(m fstest.MapFS) { delete(m, "proc/self/mountinfo") }},
		{"no BTF", func(m fstest.MapFS) { delete(m, "sys/kernel/btf/vmlinux") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := base()
			tt.edit(root)
			e := &Env{Root: root}
			rows := []status.Finding{checkKernel(e), checkCgroupFS(e), checkCgroupMount(e), checkBTF(e)}
			verdict := hostcheck.Check(root)
			switch w := worst(rows); {
			case verdict == nil && w == fail:
				t.Errorf("the loader's check passes, the rows say %v: %+v", w, rows)
			case verdict != nil && errors.Is(verdict, hostcheck.ErrUnreadable) && w == ok:
				t.Errorf("the loader cannot judge (%v), the rows say OK", verdict)
			case verdict != nil && !errors.Is(verdict, hostcheck.ErrUnreadable) && w != fail:
				t.Errorf("the loader refuses (%v), the rows say %v: %+v", verdict, w, rows)
			}
		})
	}
}
