package testenv

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// cgroupAttachTypes are the cgroup hooks AttachedPrograms looks at: the
// redirector's and the other socket hooks a stray program could sit on.
var cgroupAttachTypes = []ebpf.AttachType{
	ebpf.AttachCGroupInetIngress, ebpf.AttachCGroupInetEgress,
	ebpf.AttachCGroupInetSockCreate, ebpf.AttachCGroupSockOps,
	ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind,
	ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
	ebpf.AttachCGroupInet4PostBind, ebpf.AttachCGroupInet6PostBind,
	ebpf.AttachCGroupUDP4Sendmsg, ebpf.AttachCGroupUDP6Sendmsg,
	ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername,
	ebpf.AttachCgroupInet4GetSockname, ebpf.AttachCgroupInet6GetSockname,
}

// AttachedPrograms lists the programs attached directly to the cgroup
// directory, one "<attach type> <program id>" each, through the kernel's
// query API (no bpftool needed). None gives an empty list.
func AttachedPrograms(t testing.TB, cgroup string) []string {
	t.Helper()
	f, err := os.Open(cgroup)
	if err != nil {
		t.Fatalf("open cgroup %s: %v", cgroup, err)
	}
	defer f.Close()
	var out []string
	for _, at := range cgroupAttachTypes {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if errors.Is(err, ebpf.ErrNotSupported) {
			continue // a hook this kernel does not have holds nothing
		}
		if err != nil {
			t.Fatalf("query %v programs on %s: %v", at, cgroup, err)
		}
		for _, p := range res.Programs {
			out = append(out, fmt.Sprintf("%v %d", at, p.ID))
		}
	}
	return out
}
