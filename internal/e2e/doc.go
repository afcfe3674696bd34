// Package e2e holds the end-to-end tests and the security suite of the
// agent: the real azure-proxy-agent binary, built from examples/, against
// the simulated host on the real metadata addresses inside a network
// namespace the tests create, with curl and a Go client as callers, as root
// and as nobody, inside a child cgroup (internal/agenttest).
//
// The intended caller is CI, which runs `go test -race ./...` as root with
// CI=true; without root every test skips, and under CI=true it fails
// instead. The security suite prints one line per finding,
// "PASS|FAIL <catalogue id> <message>", with the ids of docs/protocol.md
// §10.1, and any FAIL fails the test.
//
// The suite automates A1, A1b, A1c, A3 (malformed HTTP, 65 KB URI and
// header, slowloris cut at the header timeout), A4, A5 (against a listener
// the test controls), B3, B4, C1, C5, C7, D1 (31 encodings of the token
// path, as nobody and as root), D3 (case and Unicode in identities), D4,
// D5 (two local rule sets swapped under four callers' traffic), E1, E2 (symlinks planted at every file the agent writes), E3 (a
// read-only key folder), E5 (an older key's file restored over the
// current one), F1, F2, F4, G1 (500 connections), G2, G3 (a
// caller behind 3,200 connects into full audit maps) and the local-file
// scenarios S1 to S12 and S17 to S20. E4 and G4 are
// TestSIGKILLRestartWithPins, B1 TestRequestsAllowedDeniedAudited, and F3
// the proxy package's TestRotatingFile (concurrent writers through many
// rotations: no torn line, no file over the limit, no more files than
// kept) and TestRotatingFileNoFollow (a symlink planted between
// rotations): the agent's 10 MB logs are too large to rotate here. Not
// automated: A2 (another VM), B2 (replay: the protocol has no nonce), C2
// to C4 and D2 (setuid, a bind-mounted exe, ptrace, symlinks: identity is
// what the kernel recorded at connect time and /proc shows at accept, the
// documented trust boundary), C6 (the host's refusal of unsigned
// requests, not the agent's), H1 and H2 (the setup tool and the VM
// extension, which this project does not ship).
//
// The first seconds after a restart (docs/restart-state.md) are
// TestRestartWhileKeyStatusFails, TestKeyStatusRecoveryReported and
// TestRefusedAttestationsKeepFewKeyFiles.
//
// Run them with
//
//	sudo go test -v ./internal/e2e/
//
// They need root, cgroup v2, a kernel the ebpf package accepts, and unshare
// (util-linux), ip (iproute2) and curl on PATH; the agent is built
// with the go command the tests find on PATH. They take about 130 s, the
// security suite about 85 of them.
//
// The sharp edge: these tests load eBPF programs and start a process that
// binds 127.0.0.1:3080, so they run one at a time (no t.Parallel) and only
// inside the namespace agenttest.Main makes.
package e2e
