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
// The suite automates A1, A1b, A1c, A3 (malformed HTTP, 65 KB URI and
// header, slowloris cut at the header timeout), A4, A5 (against a listener
// the test controls), B3, B4, C1, C5, C7, D1 (31 encodings of the token
// path, as nobody and as root), D3 (case and Unicode in identities), D4,
// E1, E2 (symlinks planted at every file the agent writes), E3 (a
// read-only key folder), F1, F2, F4, G1 (500 connections), G2, G3 (a
// caller behind 3,200 connects into full audit maps) and the local-file
// scenarios S1 to S12 and S17 to S20. E4 and G4 are
// TestSIGKILLRestartWithPins, and B1 TestRequestsAllowedDeniedAudited. Not
// automated: A2 (another VM), B2 (replay: the protocol has no nonce), C2
// to C4 and D2 (setuid, a bind-mounted exe, ptrace, symlinks: identity is
// what the kernel recorded at connect time and /proc shows at accept, the
// documented trust boundary), C6 (the host's refusal of unsigned
// requests, not the agent's), D5, E5, F3, H1 and H2.
//
// Run them with
//
//	sudo go test -v ./internal/e2e/
//
// They need root, cgroup v2, a kernel the ebpf package accepts, and unshare
// (util-linux), ip (iproute2), curl and bpftool on PATH; the agent is built
// with the go command the tests find on PATH. They take about 100 s, the
// security suite about 75 of them.
//
// The sharp edge: these tests load eBPF programs and start a process that
// binds 127.0.0.1:3080, so they run one at a time (no t.Parallel) and only
// inside the namespace agenttest.Main makes.
package e2e
