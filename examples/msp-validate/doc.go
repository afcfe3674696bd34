// Command msp-validate runs the checks of the Metadata Security Protocol
// troubleshooting guide on the machine it runs on and prints a verdict (the
// root cause and its action), then one row per check: OK, WARN, FAIL, or
// SKIP for a row that only follows from the root cause.
//
//	msp-validate [--json | --wide] [--root DIR] [--os linux|windows] [--agent-addr 127.0.0.1:3080]
//
// On Linux it checks the kernel (5.15 or later, cgroup2, BTF), the agent
// (binary on PATH, unit file, unit active, the unit's process, listener
// answering GET /provision), cloud-init (24.3 or later) and the guide's
// provisioning table, status.json (fresh, SUCCESS, each module RUNNING, and
// the guide's reading of a failure message), status.tag, and the owners and
// modes of the key folder and status file. On Windows it checks the OS
// version, the GuestProxyAgent, eBPFCore and NetEbpfExt services, the
// listener and C:\WindowsAzure\ProxyAgent\Logs\status.json.
//
// It is meant for operators on a VM, and for support scripts through
// --json. The exit status is 0 when no check failed, 1 when one did, 2 for
// a usage error; -h prints the synopsis and exits 0.
//
// The sharp edge: it must stay read-only. It never opens key files (only
// their metadata), never sends x-ms-azure-notify to the listener (that would
// make the agent poll the host), and runs only systemctl is-active,
// systemctl show MainPID and, when cloud-init's version is nowhere on disk,
// cloud-init --version. With --root every file is read under DIR and the
// live queries are skipped, which is how the tests run it on the fixture
// trees in testdata; a root without /sys/kernel is an offline disk, whose
// running-system rows are "not checked", never failed.
package main
