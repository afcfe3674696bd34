// Package agenttest is the harness of the end-to-end and security tests: it
// runs the real azure-proxy-agent binary against the simulated host
// (msp/msptest) on the real metadata addresses, and real clients (curl and a
// Go client) as root or as an unprivileged uid inside a child cgroup.
//
// The intended caller is a test package's TestMain and its tests:
//
//	func TestMain(m *testing.M) { os.Exit(agenttest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		env := agenttest.New(t, &agenttest.Options{Rules: rules})
//		agent := env.StartAgent(t)
//		res := env.Get(t, agenttest.Nobody, "http://169.254.169.254/metadata/instance", nil)
//		...
//	}
//
// Main re-executes the test binary inside a network namespace of its own
// (internal/sandbox) with 169.254.169.254 and 168.63.129.16 on that
// namespace's loopback, builds the agent once, and keeps one copy of the
// test binary in a world-readable folder: the same binary is the Go client,
// run as a subprocess so that it can have its own uid and cgroup.
//
// The sharp edges: New refuses to run outside the namespace Main created
// (nothing may reach a real metadata address), the eBPF programs go on a
// child cgroup New creates and never on the root, and every Env removes
// what it made (agent process, pins and their bpffs mount, cgroup, files)
// in t.Cleanup. Tests using an Env must not run in parallel with each
// other: they share the metadata addresses and 127.0.0.1:3080.
package agenttest
