//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/metadatasec/gpa/ebpf/hostcheck"
)

// Sentinel errors. The typed errors below wrap them; test with errors.Is.
var (
	// ErrKernelTooOld means the running kernel is older than 5.15.
	ErrKernelTooOld = hostcheck.ErrKernelTooOld
	// ErrNoCgroup2 means cgroup v2 is not available, not mounted, or the
	// path given is not on a cgroup v2 mount.
	ErrNoCgroup2 = hostcheck.ErrNoCgroup2
	// ErrNoBTF means the kernel does not expose BTF.
	ErrNoBTF = hostcheck.ErrNoBTF

	// ErrNotFound means the key is not in the map: no policy for that
	// destination, or no caller record for that client (never
	// redirected, already consumed, or evicted).
	ErrNotFound = errors.New("ebpf: not found")
	// ErrInvalidAddress means an address cannot be stored in the maps: it
	// must be IPv4 (or IPv4-mapped IPv6) with a non-zero port.
	ErrInvalidAddress = errors.New("ebpf: invalid address")
	// ErrNotSupported means the kernel lacks a program or map type the
	// redirector needs. It wraps cilium/ebpf's ErrNotSupported when the
	// probe said so.
	ErrNotSupported = errors.New("ebpf: kernel feature not supported")
)

// Remediations quoted in errors; they match the MSP troubleshooting guide.
const (
	remedyKernel  = hostcheck.RemedyKernel
	remedyCgroup2 = hostcheck.RemedyCgroup2
	remedyFeature = "upgrade the kernel to Linux 5.15 or later with cgroup sock_addr and sock_ops program support"
)

// RequirementError reports a host that cannot run the redirector, before
// anything is loaded. errors.Is matches Kind (ErrKernelTooOld, ErrNoCgroup2,
// ErrNoBTF, ErrNotSupported) and Err. It is hostcheck's type, so the
// kernel, cgroup and BTF verdicts are the ones msp-validate shows.
type RequirementError = hostcheck.RequirementError

// ProgramOp is the step at which a program failed.
type ProgramOp string

// The steps a program goes through.
const (
	OpLoad   ProgramOp = "load"
	OpAttach ProgramOp = "attach"
)

// ProgramError reports a program the kernel refused. Its text starts with
// the words the MSP troubleshooting guide shows, "Failed to load program
// 'connect4' with error: ..." or "Failed to attach program 'connect4' with
// error: ...", then gives the remediation and, for load failures, the
// verifier log.
type ProgramError struct {
	// Op is the step that failed.
	Op ProgramOp
	// Program is the program's name in the object, for example
	// "connect4".
	Program string
	// VerifierLog is the verifier output for load failures that produced
	// one, line by line.
	VerifierLog []string
	// Err is the cause from the kernel or cilium/ebpf.
	Err error
}

// Error gives the guide's text, the remediation and any verifier log.
func (e *ProgramError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Failed to %s program '%s' with error: %v; %s", e.Op, e.Program, e.Err, e.Remediation())
	if len(e.VerifierLog) > 0 {
		b.WriteString("\nVerifier log:\n")
		b.WriteString(strings.Join(e.VerifierLog, "\n"))
	}
	return b.String()
}

// Remediation says what the user can do about the failure.
func (e *ProgramError) Remediation() string {
	if e.Op == OpAttach {
		return "check that the cgroup is on cgroup v2 (" + remedyCgroup2 + ") and that the kernel is Linux 5.15 or later"
	}
	return remedyKernel
}

// Unwrap returns the cause.
func (e *ProgramError) Unwrap() error { return e.Err }

func newLoadError(prog string, err error) *ProgramError {
	pe := &ProgramError{Op: OpLoad, Program: prog, Err: err}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		pe.VerifierLog = ve.Log
	}
	return pe
}

// CgroupError reports a cgroup path that cannot be used, in the guide's
// words: "Failed to open cgroup '<path>' with error: ...". errors.Is matches
// ErrNoCgroup2 when the path is not on cgroup v2, and os.ErrNotExist when
// it is missing.
type CgroupError struct {
	// Path is the cgroup directory as given.
	Path string
	// Err is the cause.
	Err error
}

// Error gives the guide's text, with the remediation when the path is not
// on cgroup v2.
func (e *CgroupError) Error() string {
	msg := fmt.Sprintf("Failed to open cgroup '%s' with error: %v", e.Path, e.Err)
	if errors.Is(e.Err, ErrNoCgroup2) {
		msg += "; " + remedyCgroup2
	}
	return msg
}

// Unwrap returns the cause.
func (e *CgroupError) Unwrap() error { return e.Err }

// MapError reports a failed map operation, worded as upstream words it.
// errors.Is(err, ErrNotFound) reports a missing key.
type MapError struct {
	// Op is "create", "update", "delete" or "lookup".
	Op string
	// Map is the kernel map name, for example "policy_map".
	Map string
	// Key describes the key, for example "168.63.129.16:80"; empty for
	// whole-map operations.
	Key string
	// Err is the cause.
	Err error
}

// Error words the failure as upstream does for the same operation.
func (e *MapError) Error() string {
	switch e.Op {
	case "create":
		return fmt.Sprintf("Failed to load HashMap '%s' with error: %v", e.Map, e.Err)
	case "update":
		return fmt.Sprintf("Failed to update HashMap '%s' for '%s' with error: %v", e.Map, e.Key, e.Err)
	case "iterate":
		return fmt.Sprintf("Failed to iterate HashMap '%s' with error: %v", e.Map, e.Err)
	}
	return fmt.Sprintf("Failed to %s element '%s' in BPF map '%s'. %v", e.Op, e.Key, e.Map, e.Err)
}

// Unwrap returns the cause.
func (e *MapError) Unwrap() error { return e.Err }

// Is reports a missing key as ErrNotFound.
func (e *MapError) Is(target error) bool {
	return target == ErrNotFound && errors.Is(e.Err, ebpf.ErrKeyNotExist)
}
