//go:build linux

package msptest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
)

var errNoNetns = errors.New("cannot create a network namespace")

// TestServeOnRealAddressesInNetns serves the host on the real metadata
// addresses inside a network namespace the test creates for one locked OS
// thread. The thread is never unlocked, so it exits with the goroutine and
// the namespace goes with it; nothing outside the namespace is touched.
func TestServeOnRealAddressesInNetns(t *testing.T) {
	testenv.MustBeRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.SkipOrFail(t, "needs iproute2's ip: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // deliberately never unlocked
		errc <- inNetns()
	}()
	err := <-errc
	if errors.Is(err, errNoNetns) {
		testenv.Require(t, "a new network namespace", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func inNetns() error {
	orig, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("%w: %v", errNoNetns, err)
	}
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		return fmt.Errorf("%w: %v", errNoNetns, err)
	}
	inNS := func() error {
		cur, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil || cur == orig {
			return fmt.Errorf("refusing to go on: the thread is not in its own network namespace (%s, %v)", cur, err)
		}
		return nil
	}
	if err := inNS(); err != nil {
		return err
	}
	// Children forked from this locked thread inherit its namespace.
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "169.254.169.254/32", "dev", "lo"},
		{"addr", "add", "168.63.129.16/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
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

	// Check again right before dialing a metadata address.
	if err := inNS(); err != nil {
		return err
	}
	// Dial from this thread so the client socket is in the namespace too.
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
