// Command msp-validate runs the checks of the Metadata Security Protocol
// troubleshooting guide on the machine it runs on and prints one row per
// check: OK, WARN or FAIL, what it found, and the guide's action.
//
//	msp-validate [--json] [--root DIR] [--os linux|windows] [--agent-addr 127.0.0.1:3080]
//
// On Linux it checks the kernel (5.15 or later, cgroup2, BTF), the agent
// (binary on PATH, unit file, unit active, process, listener answering
// GET /provision), cloud-init (24.3 or later) and the guide's provisioning
// matrix, status.json (fresh, SUCCESS, each module RUNNING, and the guide's
// reading of a failure message), status.tag, and the owners and modes of
// the key folder and status file. On Windows it checks the OS version, the
// GuestProxyAgent, eBPFCore and NetEbpfExt services, the listener and
// C:\WindowsAzure\ProxyAgent\Logs\status.json.
//
// It is meant for operators on a VM, and for support scripts through
// --json. The exit status is 0 when no check failed, 1 when one did, 2 for
// a usage error.
//
// The sharp edge: it must stay read-only. It never opens key files (only
// their metadata), never sends x-ms-azure-notify to the listener (that would
// make the agent poll the host), and runs only systemctl is-active and,
// when cloud-init's version module cannot be found, cloud-init --version.
// With --root every file is read under DIR and the live queries are
// skipped, which is how the tests run it on the fixture trees in testdata.
package main
