//go:build linux

package msptest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/sandbox"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
)

const netnsChildEnv = "GPA_MSPTEST_NETNS_CHILD"

// TestServeOnRealAddressesInNetns serves the host on the real metadata
// addresses inside a network namespace the test creates: the test binary
// re-executes itself through sandbox.Command, so the addresses exist only on
// that namespace's loopback and nothing outside it is touched.
func TestServeOnRealAddressesInNetns(t *testing.T) {
	if os.Getenv(netnsChildEnv) == "1" {
		if err := serveInNetns(); err != nil {
			t.Fatal(err)
		}
		return
	}
	testenv.MustBeRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.SkipOrFail(t, "needs iproute2's ip: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, err := sandbox.Command(ctx, exe, "-test.run", "^TestServeOnRealAddressesInNetns$", "-test.v", "-test.count=1")
	testenv.Require(t, "a new network namespace", err)
	cmd.Env = append(cmd.Env, netnsChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child in a new network namespace failed: %v", err)
	}
}

func serveInNetns() error {
	// SetupLoopback refuses unless this is the namespace sandbox.Command
	// made, so nothing below can reach a real metadata address.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sandbox.SetupLoopback(ctx); err != nil {
		return err
	}
	lns, err := ListenMetadata()
	if err != nil {
		return err
	}
	h := NewHost(&Options{Listeners: lns})
	defer h.Close()
	if h.IMDSAddr() != msp.IMDSAddr || h.WireServerAddr() != msp.WireServerAddr || h.HostGAAddr() != msp.HostGAAddr {
		return fmt.Errorf("addresses %s %s %s", h.WireServerAddr(), h.HostGAAddr(), h.IMDSAddr())
	}
	c, err := net.DialTimeout("tcp", msp.IMDSAddr.String(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n")
	b := make([]byte, 64)
	n, _ := io.ReadAtLeast(c, b, 12)
	if got := string(b[:n]); len(got) < 12 || got[:12] != "HTTP/1.1 200" {
		return fmt.Errorf("IMDS in the namespace answered %q", got)
	}
	reqs := h.Requests()
	if len(reqs) != 1 || reqs[0].Endpoint != msp.EndpointIMDS || reqs[0].Status != http.StatusOK {
		return fmt.Errorf("records %+v", reqs)
	}
	return nil
}

// Outside a namespace that has them, the metadata addresses are not local:
// ListenMetadata fails and leaves nothing open.
func TestListenMetadataOutsideNetns(t *testing.T) {
	ls, err := ListenMetadata()
	if err == nil {
		ls.Close()
		t.Skip("the metadata addresses are local here")
	}
	if !strings.Contains(err.Error(), "msptest: listen on 168.63.129.16:80") {
		t.Errorf("err = %v", err)
	}
}
