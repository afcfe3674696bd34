package main

import (
	"context"
	"fmt"
	"os"
)

// Validate on a Windows fixture tree, with a fake service manager in which
// eBPFCore is missing: the row fails and the deployment advice follows.
func ExampleValidate() {
	svc := allRunning()
	delete(svc, "eBPFCore")
	e := &Env{
		OS:       "windows",
		Root:     os.DirFS("testdata/windows-healthy"),
		Now:      fixtureNow,
		Services: svc,
		Version:  osVersion(10, 20348, true),
	}
	for _, r := range Validate(context.Background(), e) {
		fmt.Println(r.Severity, r.Check)
	}
	// Output:
	// OK os.version
	// OK service.GuestProxyAgent
	// FAIL service.eBPFCore
	// OK service.NetEbpfExt
	// WARN agent.listener
	// OK status.file
	// OK status.timestamp
	// OK status.proxyAgentStatus
	// OK status.keyLatchStatus
	// OK status.ebpfProgramStatus
	// OK status.proxyListenerStatus
	// WARN deployment
}
