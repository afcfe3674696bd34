// Command gpa-bench is the performance harness of issue 9: one command that
// builds the stripped agent, enters a network namespace of its own and
// prints, from a single run, the same IMDS GET measured direct to the
// simulated host, through the real azure-proxy-agent binary (redirect,
// identify, authorize, sign, forward) and through nginx as a plain reverse
// proxy, next to the agent's memory, start-up time, connect() overhead and
// binary size, each checked against the goals of issues 9 and 22. nginx
// writing an access log is there for comparison only; "go relay", the least
// a Go proxy with one goroutine per connection does (relay.go), shows what
// Go's runtime and the kernel alone cost on the machine, and the agent's
// CPU per request is judged against it in the same run.
//
//	sudo go run ./internal/cmd/gpa-bench [-duration 3s] [-soak 1000000] [-readme FILE]
//
// The intended caller is a developer comparing a change before and after;
// it is documented in README.md and is not a CI gate: on a shared machine
// the numbers move from run to run, which is why every row of a table comes
// from the same run, interleaved.
//
// What it does, in order: installs Debian's nginx-light with apt-get when
// nginx is missing (not with -no-nginx), builds the agent with -trimpath
// -ldflags='-s -w', re-executes itself through internal/sandbox in a new
// network namespace with 169.254.169.254 and 168.63.129.16 on its loopback,
// creates two child cgroups beside each other under the cgroup2 mount (the
// agent's programs attach to one, the other stays plain), serves msptest on
// the real metadata addresses, starts the agent, nginx and the relay (the
// hidden "relay" subcommand, a process of its own), and runs its own
// load generator (the hidden "load" subcommand) as a child process: in the
// agent's cgroup for the agent rows, so that its connects are redirected,
// and outside it for the direct and nginx rows. Every run is bounded in
// count and time; agent, nginx, cgroups and files are removed at the end,
// also on Ctrl-C.
//
// Sharp edge: it needs root, and it loads eBPF programs, but never at the
// cgroup root: only into the child cgroup it created, which holds nothing
// but its own load generator. Nothing it sends leaves the namespace.
package main
