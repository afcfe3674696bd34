package main

import (
	"context"
	"fmt"
	"os"
)

// Validate on a Windows fixture tree, with a fake service manager in which
// eBPFCore is missing: the row fails, NetEbpfExt, which needs it, is
// skipped, and the deployment advice follows.
func ExampleValidate() {
	svc := allRunning()
	delete(svc, "eBPFCore")
	svc["NetEbpfExt"] = ServiceStatus{State: "STOPPED", StartType: "SYSTEM_START"}
	e := &Env{
		OS:       "windows",
		Root:     os.DirFS("testdata/windows-healthy"),
		Now:      fixtureNow,
		Services: svc,
		Version:  osVersion(10, 20348, true),
	}
	rep := Validate(context.Background(), e)
	fmt.Println("cause:", rep.Causes[0].Check)
	for _, r := range rep.Rows {
		fmt.Println(r.Result(), r.Check)
	}
	// Output:
	// cause: service.eBPFCore
	// OK os.version
	// OK service.GuestProxyAgent
	// FAIL service.eBPFCore
	// SKIP service.NetEbpfExt
	// WARN agent.listener
	// OK status.file
	// OK status.timestamp
	// OK status.proxyAgentStatus
	// OK status.keyLatchStatus
	// OK status.ebpfProgramStatus
	// OK status.proxyListenerStatus
	// WARN deployment
}
