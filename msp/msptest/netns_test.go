//go:build linux

package msptest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
)

// TestServeOnRealAddressesInNetns serves the host on the real metadata
// addresses inside a network namespace the test creates: the test binary
// re-executes itself through sandbox.Command, so the addresses exist only on
// that namespace's loopback and nothing outside it is touched.
func TestServeOnRealAddressesInNetns(t *testing.T) {
	if !testenv.InNetns(t) {
		return
	}
	if err := serveInNetns(); err != nil {
		t.Fatal(err)
	}
}

func serveInNetns() error {
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
