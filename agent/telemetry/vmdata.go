package telemetry

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// LocalVMData returns what this machine says about itself, as upstream
// fills the OS parameters: CPU architecture, "Linux:<NAME>-<VERSION_ID>"
// from /etc/os-release, total RAM in MiB and the processor count. The VM's
// identity (subscription, VM id, container) stays empty.
func LocalVMData() VMData {
	v := VMData{KeywordName: keywordName(runtime.GOARCH), Processors: uint64(runtime.NumCPU())}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		v.OSVersion = osVersion(string(b))
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		v.RAMInMB = memTotalMB(f)
		f.Close()
	}
	return v
}

// keywordName is upstream's KeywordName JSON with Rust's name for the
// architecture.
func keywordName(goarch string) string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "x86"}[goarch]
	if arch == "" {
		arch = goarch
	}
	return `{"CpuArchitecture":"` + arch + `"}`
}

func osVersion(osRelease string) string {
	name, version := "Unknown", "Unknown"
	for line := range strings.Lines(osRelease) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "NAME="); ok {
			name = strings.Trim(v, `"`)
		} else if v, ok := strings.CutPrefix(line, "VERSION_ID="); ok {
			version = strings.Trim(v, `"`)
		}
	}
	return "Linux:" + name + "-" + version
}

func memTotalMB(f *os.File) uint64 {
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb / 1024
		}
	}
	return 0
}
