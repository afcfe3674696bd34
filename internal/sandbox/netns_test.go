package sandbox

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/testenv"
)

func TestHostNamespaceRefused(t *testing.T) {
	if os.Getenv(EnvInNetns) == "1" {
		t.Skip("runs in the parent only")
	}
	if own, err := InOwnNetns(); err != nil || own {
		t.Fatalf("InOwnNetns in the test process = %v, %v; want false", own, err)
	}
	if err := SetupLoopback(context.Background()); !errors.Is(err, ErrHostNamespace) {
		t.Fatalf("SetupLoopback in the host namespace: err = %v, want ErrHostNamespace", err)
	}
}

// The child re-runs this test binary in a new namespace, configures the
// metadata addresses and listens on one: proof that the addresses exist only
// there.
func TestMetadataLoopbackInNetns(t *testing.T) {
	if os.Getenv(EnvInNetns) == "1" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := SetupLoopback(ctx); err != nil {
			t.Fatal(err)
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
		return
	}
	testenv.MustBeRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.SkipOrFail(t, "needs ip from iproute2: %v", err)
	}
	cmd, err := Command(context.Background(), os.Args[0], "-test.run=^TestMetadataLoopbackInNetns$", "-test.v")
	testenv.Require(t, "unshare", err)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// Nothing leaked into the host namespace.
	if ifs, _ := net.InterfaceAddrs(); strings.Contains(addrsString(ifs), "169.254.169.254") {
		t.Fatal("169.254.169.254 appeared in the host namespace")
	}
}

func addrsString(as []net.Addr) string {
	var b strings.Builder
	for _, a := range as {
		b.WriteString(a.String() + " ")
	}
	return b.String()
}
