package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// cgroupPrograms are the agent's programs as the kernel sees them attached
// to one cgroup: the harness asks the cgroup, not the agent, so it
// measures exactly what a connect from that cgroup runs.
type cgroupPrograms struct {
	stats io.Closer
	progs []*cebpf.Program
}

// attachTypes are the hooks a connect() from the cgroup can run.
var attachTypes = []cebpf.AttachType{
	cebpf.AttachCGroupInet4Connect, cebpf.AttachCGroupInet6Connect, cebpf.AttachCGroupSockOps,
}

// openCgroupPrograms turns on BPF run-time statistics (for as long as the
// result is open) and opens every program attached to the cgroup fd.
func openCgroupPrograms(cgroupFD int) (*cgroupPrograms, error) {
	stats, err := cebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time statistics: %w", err)
	}
	cp := &cgroupPrograms{stats: stats}
	for _, at := range attachTypes {
		res, err := link.QueryPrograms(link.QueryOptions{Target: cgroupFD, Attach: at})
		if err != nil {
			cp.Close()
			return nil, fmt.Errorf("query %v programs: %w", at, err)
		}
		for _, ap := range res.Programs {
			p, err := cebpf.NewProgramFromID(ap.ID)
			if err != nil {
				cp.Close()
				return nil, fmt.Errorf("open program %d: %w", ap.ID, err)
			}
			cp.progs = append(cp.progs, p)
		}
	}
	if len(cp.progs) == 0 {
		cp.Close()
		return nil, errors.New("no programs attached to the load cgroup")
	}
	return cp, nil
}

// runtime is the time the kernel has spent in the programs so far.
func (cp *cgroupPrograms) runtime() (time.Duration, error) {
	var total time.Duration
	for _, p := range cp.progs {
		st, err := p.Stats()
		if err != nil {
			return 0, err
		}
		total += st.Runtime
	}
	return total, nil
}

// Close releases the programs and turns statistics off again.
func (cp *cgroupPrograms) Close() {
	for _, p := range cp.progs {
		p.Close()
	}
	cp.stats.Close()
}
