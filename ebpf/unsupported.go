//go:build !(linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64))

package ebpf

// The redirector needs Linux cgroup BPF programs. On other systems (the
// Windows agent uses eBPF for Windows, which the platform installs) this
// package is empty, and using it fails to compile with this name in the
// error.
const _ = ebpfPackageRequiresLinux
