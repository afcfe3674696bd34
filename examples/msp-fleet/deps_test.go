package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestDoubleInBinary keeps the fakes out of the production binary.
func TestNoTestDoubleInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasSuffix(pkg, "/armtest") || strings.HasSuffix(pkg, "/msptest") || strings.Contains(pkg, "/azcore/fake") || strings.Contains(pkg, "metadatasec/gpa/internal/") {
			t.Errorf("msp-fleet links %s: a test double or internal helper must not reach the binary", pkg)
		}
	}
}
