package sandbox_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/sandbox"
	"github.com/metadatasec/gpa/internal/testenv"
)

func TestHostNamespaceRefused(t *testing.T) {
	if os.Getenv(sandbox.EnvInNetns) == "1" {
		t.Skip("runs in the parent only")
	}
	if own, err := sandbox.InOwnNetns(); err != nil || own {
		t.Fatalf("InOwnNetns in the test process = %v, %v; want false", own, err)
	}
	if err := sandbox.SetupLoopback(context.Background()); !errors.Is(err, sandbox.ErrHostNamespace) {
		t.Fatalf("SetupLoopback in the host namespace: err = %v, want ErrHostNamespace", err)
	}
}

// The test re-runs itself in a new namespace (testenv.InNetns, through
// Command and SetupLoopback), where it listens on a metadata address:
// proof that the addresses exist only there.
func TestMetadataLoopbackInNetns(t *testing.T) {
	if !testenv.InNetns(t) {
		// Nothing leaked into the host namespace.
		if ifs, _ := net.InterfaceAddrs(); strings.Contains(addrsString(ifs), "169.254.169.254") {
			t.Fatal("169.254.169.254 appeared in the host namespace")
		}
		return
	}
	ln, err := net.Listen("tcp", "169.254.169.254:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

func addrsString(as []net.Addr) string {
	var b strings.Builder
	for _, a := range as {
		b.WriteString(a.String() + " ")
	}
	return b.String()
}
