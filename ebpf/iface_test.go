//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf_test

import (
	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/proxy"
)

// The maps are what the latch and the proxy consume, with no adapter in
// between: the agent passes r.Policy() and r.Audit() as they are.
var (
	_ keylatch.RedirectPolicy = (*ebpf.PolicyMap)(nil)
	_ proxy.AuditLookup       = (*ebpf.AuditMap)(nil)
)
