package testenv

import (
	"net"
	"strings"
	"testing"

	"github.com/metadatasec/gpa/internal/sandbox"
)

// TestInNetns: the body runs only in the child, in a namespace sandbox
// made, with the metadata addresses on its loopback.
func TestInNetns(t *testing.T) {
	if !InNetns(t) {
		return
	}
	if own, err := sandbox.InOwnNetns(); err != nil || !own {
		t.Fatalf("InNetns returned true outside a namespace of our own: %v, %v", own, err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := lo.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.String())
	}
	for _, want := range sandbox.MetadataAddrs {
		if !strings.Contains(strings.Join(got, " "), want) {
			t.Errorf("lo has %v, want %s on it", got, want)
		}
	}
}

func TestChildResult(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"=== RUN   TestA\n--- PASS: TestA (0.00s)\nPASS\n", "PASS"},
		{"=== RUN   TestA\n    x_test.go:9: no root\n--- SKIP: TestA (0.00s)\nPASS\n", "SKIP"},
		{"testing: warning: no tests to run\nPASS\n", ""},
		{"=== RUN   TestAB\n--- PASS: TestAB (0.00s)\nPASS\n", ""}, // another test
		{"", ""},
	} {
		if got := childResult([]byte(tc.out), "TestA"); got != tc.want {
			t.Errorf("childResult(%q) = %q, want %q", tc.out, got, tc.want)
		}
	}
}
