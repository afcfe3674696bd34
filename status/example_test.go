package status_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

// Components report into one registry; the overall status follows the
// three modules cloud-init and the FAQ care about.
func ExampleRegistry() {
	reg := status.NewRegistry(&status.RegistryOptions{Version: "1.0.30"})
	reg.Set(status.ModuleKeyLatch, msp.ModuleRunning, "poll secure channel status task started.")
	reg.Set(status.ModuleListener, msp.ModuleRunning, "Started proxy listener, ready to accept request - 27")
	fmt.Println(reg.Snapshot(time.Now()).ProxyAgentStatus.Status)

	reg.Set(status.ModuleRedirector, msp.ModuleRunning, "Started Redirector with eBPF maps - 143")
	fmt.Println(reg.Snapshot(time.Now()).ProxyAgentStatus.Status)
	// Output:
	// ERROR
	// SUCCESS
}

// The reader understands the state strings of every agent version.
func ExampleParseSecureChannel() {
	for _, s := range []string{
		"WireServer Enforce -  IMDS Audit - HostGA Enforce",
		"Wireserver Enforce - IMDS Enforce", // 1.0.x
		"disabled",
	} {
		c, err := status.ParseSecureChannel(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("latched=%v wireserver=%v imds=%v hostga=%v\n", c.Latched(), c.WireServer, c.IMDS, c.HostGA)
	}
	// Output:
	// latched=true wireserver=enforce imds=audit hostga=enforce
	// latched=true wireserver=enforce imds=enforce hostga=enforce
	// latched=false wireserver=disabled imds=disabled hostga=disabled
}

// The agent writes status.json; readers such as validators parse it back.
func ExampleWriter() {
	dir, _ := os.MkdirTemp("", "status-example")
	defer os.RemoveAll(dir)
	reg := status.NewRegistry(&status.RegistryOptions{Version: "1.0.30"})
	w, _ := status.NewWriter(reg, &status.WriterOptions{Path: filepath.Join(dir, "status.json")})
	if err := w.WriteOnce(); err != nil {
		fmt.Println(err)
		return
	}
	s, _ := status.ReadFile(w.Path())
	fmt.Println(s.ProxyAgentStatus.Version, s.ProxyAgentStatus.Status, s.ProxyAgentStatus.EBPFProgramStatus.Message)
	// Output:
	// 1.0.30 ERROR Status unknown.
}

// What `azure-proxy-agent --status --wait 120` does: ask the listener,
// then exit with the code cloud-init acts on. Here the agent's
// provisioning ends by timeout without the eBPF flag.
func ExampleWaitProvisioned() {
	reg := status.NewRegistry(&status.RegistryOptions{})
	reg.SetMessage(status.ModuleRedirector, "Failed to start redirector: cgroup2 is not mounted")
	prov, _ := status.NewProvision(&status.ProvisionOptions{Registry: reg, Timeout: time.Millisecond})
	agent := httptest.NewServer(prov) // the proxy serves it at /provision
	defer agent.Close()

	start := time.Now() // the CLI starts
	_ = prov.SetReady(context.Background(), status.KeyLatchReady|status.ListenerReady)
	time.Sleep(2 * time.Millisecond)
	_, _ = prov.CheckTimeout(context.Background())

	res, _ := status.WaitProvisioned(context.Background(), &status.WaitOptions{
		Addr:  agent.Listener.Addr().String(),
		Wait:  120 * time.Second,
		Start: start,
	})
	fmt.Println(res.Finished, res.ExitCode())
	fmt.Printf("%q\n", res.Report())
	// Output:
	// true 2
	// "ebpfProgramStatus - Failed to start redirector: cgroup2 is not mounted\r\n"
}
