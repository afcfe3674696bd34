package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoMetricsLibrary: proxy measures through its Metrics interface and
// links no metrics library, so an embedder who wants none gets none.
func TestNoMetricsLibrary(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go tool: %v", err)
	}
	out, err := exec.Command(gotool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.Contains(p, "prometheus") || strings.Contains(p, "protobuf") {
			t.Errorf("proxy depends on %s", p)
		}
	}
	if !strings.Contains(string(out), "github.com/metadatasec/gpa/msp\n") {
		t.Errorf("go list -deps does not list msp; the check looked at the wrong thing")
	}
}
