// Package e2e holds the end-to-end tests and the security suite of the
// agent: the real azure-proxy-agent binary, built from examples/, against
// the simulated host on the real metadata addresses inside a network
// namespace the tests create, with curl and a Go client as callers, as root
// and as nobody, inside a child cgroup (internal/agenttest).
//
// The intended caller is CI, which runs `go test -race ./...` as root with
// CI=true; without root every test skips, and under CI=true it fails
// instead. The security suite prints one line per finding,
// "PASS|FAIL <catalogue id> <message>", with the ids of gpa-protocol.md
// §10.1, and any FAIL fails the test.
//
// Run them with
//
//	sudo go test -v ./internal/e2e/
//
// They need root, cgroup v2, a kernel the ebpf package accepts, and unshare
// (util-linux), ip (iproute2), curl and bpftool on PATH; the agent is built
// with the go command the tests find on PATH. They take about 40 s.
//
// The sharp edge: these tests load eBPF programs and start a process that
// binds 127.0.0.1:3080, so they run one at a time (no t.Parallel) and only
// inside the namespace agenttest.Main makes.
package e2e
