package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"time"
)

// histogram counts durations in log-linear buckets: exact below 64 ns, then
// 64 buckets per power of two, so a percentile is off by at most 1/64
// (1.6 %) at any scale, in a fixed few kilobytes whatever the count.
type histogram struct {
	Counts []int64 `json:"counts"`
	Total  int64   `json:"total"`
	Max    int64   `json:"max"`
}

const (
	subBits    = 6
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

func newHistogram() *histogram { return &histogram{Counts: make([]int64, numBuckets)} }

func bucketOf(ns uint64) int {
	if ns < subBuckets {
		return int(ns)
	}
	shift := bits.Len64(ns) - 1 - subBits
	return (shift+1)<<subBits + int((ns>>shift)&(subBuckets-1))
}

// bucketMid is the middle of bucket i, in nanoseconds.
func bucketMid(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	shift := i>>subBits - 1
	lo := uint64(subBuckets+i&(subBuckets-1)) << shift
	return lo + (uint64(1)<<shift)/2
}

func (h *histogram) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.Counts[bucketOf(uint64(d))]++
	h.Total++
	if int64(d) > h.Max {
		h.Max = int64(d)
	}
}

func (h *histogram) merge(o *histogram) {
	if len(h.Counts) < len(o.Counts) {
		h.Counts = append(h.Counts, make([]int64, len(o.Counts)-len(h.Counts))...)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Total += o.Total
	h.Max = max(h.Max, o.Max)
}

// quantile returns the duration below which a fraction q of the samples
// lie; zero for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h == nil || h.Total == 0 {
		return 0
	}
	rank := int64(q * float64(h.Total))
	if rank >= h.Total {
		rank = h.Total - 1
	}
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen > rank {
			return min(time.Duration(bucketMid(i)), time.Duration(h.Max))
		}
	}
	return time.Duration(h.Max)
}

// procStat is what the harness reads about another process.
type procStat struct {
	// CPU is user plus system time.
	CPU time.Duration
	// RSS is the resident set, VmRSS.
	RSS int64
}

// clockTick is USER_HZ, which Linux fixes at 100 for /proc/*/stat.
const clockTick = 100

var errProcFormat = errors.New("unexpected /proc format")

// parseProcStatCPU returns utime+stime from the text of /proc/PID/stat.
// The command name may contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseProcStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errProcFormat
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ... utime(14) stime(15); f[0] is field 3.
	if len(f) < 13 {
		return 0, errProcFormat
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errProcFormat
	}
	return time.Duration(u+s) * time.Second / clockTick, nil
}

// parseVmRSS returns VmRSS in bytes from the text of /proc/PID/status.
func parseVmRSS(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, errProcFormat
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, errProcFormat
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%w: no VmRSS", errProcFormat)
}

// readProc reads CPU time and RSS of pid.
func readProc(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	cpu, err := parseProcStatCPU(b)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStat{}, err
	}
	rss, err := parseVmRSS(b)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return procStat{CPU: cpu, RSS: rss}, nil
}

// procChildren lists the direct children of pid (nginx's workers).
func procChildren(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// treeCPU sums the CPU time of pid and its direct children. It fails when
// pid itself is gone; a child that exits in between is left out.
func treeCPU(pid int) (time.Duration, error) {
	s, err := readProc(pid)
	if err != nil {
		return 0, err
	}
	total := s.CPU
	for _, p := range procChildren(pid) {
		if s, err := readProc(p); err == nil {
			total += s.CPU
		}
	}
	return total, nil
}
