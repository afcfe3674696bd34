package main

import (
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

// TestNoTLSInAgent guards the binary size goal (≤ 10 MB stripped). The
// agent speaks plain HTTP/1.1 on loopback and to the host, yet reaching
// net/http's client or server makes the linker keep crypto/tls, x509 and
// the bundled HTTP/2, about 2 MB. Nothing else in a build would say so.
func TestNoTLSInAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go tool: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "azure-proxy-agent")
	// Not stripped: nm needs the symbol table; what is linked is the same.
	// Built with this test binary's -race and -trimpath, so the packages
	// it compiled come from the build cache and only the link is new.
	args := []string{"build", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if (s.Key == "-race" || s.Key == "-trimpath") && s.Value == "true" {
				args = append(args, s.Key)
			}
		}
	}
	if out, err := exec.Command(gotool, append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(gotool, "tool", "nm", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool nm: %v\n%.2000s", err, out)
	}
	syms := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		// "  4a3b20 T crypto/tls.(*Conn).Handshake"
		if f := strings.Fields(line); len(f) >= 3 {
			syms[strings.Join(f[2:], " ")] = true
		}
	}
	const sentinel = "github.com/metadatasec/gpa/agent.(*Agent).Run"
	if !syms[sentinel] {
		t.Fatalf("nm lists no %s; cannot check the symbols:\n%.2000s", sentinel, out)
	}
	var found []string
	for s := range syms {
		for _, prefix := range []string{
			"crypto/tls.(*Conn).Handshake", "crypto/tls.(*Conn).clientHandshake", "crypto/tls.(*Conn).serverHandshake",
			"net/http.(*Transport).RoundTrip", "net/http.(*Server).Serve",
		} {
			if strings.HasPrefix(s, prefix) {
				found = append(found, s)
			}
		}
	}
	if len(found) > 0 {
		slices.Sort(found)
		t.Errorf("the agent links %v.\n"+
			"Reaching net/http's client (http.Client, http.Transport) or server (http.Server) pulls about 2 MB of "+
			"crypto/tls, x509 and HTTP/2 into the agent and breaks the 10 MB size goal. Send requests over a dialed "+
			"connection as status.WaitOptions.Dial does, and read and write HTTP heads with internal/httpwire, as the "+
			"proxy and the agent's metrics server do. `go build -ldflags=-dumpdep` shows what reaches them.", found)
	}
}

// TestNoTestDoubleInAgent: the production binary links no simulated host
// and no test helper. msptest answers as Azure would, so linked into the
// agent it could be reached by mistake; internal/ holds test code only
// (and httpwire, shared wire code, which is allowed).
func TestNoTestDoubleInAgent(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go tool: %v", err)
	}
	out, err := exec.Command(gotool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasSuffix(p, "/msp/msptest") || strings.HasSuffix(p, "/arm/armtest") ||
			(strings.Contains(p, "/gpa/internal/") && !strings.HasSuffix(p, "/internal/httpwire")) {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("the agent binary depends on test code: %v", bad)
	}
	if !strings.Contains(string(out), "github.com/metadatasec/gpa/agent\n") {
		t.Errorf("go list -deps does not list package agent; the check looked at the wrong thing:\n%.1000s", out)
	}
}
