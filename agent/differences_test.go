package agent

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"
)

// TestDifferencesLoggedAndDocumented: each difference is logged once with
// its reason, and the README's table has a row for each.
func TestDifferencesLoggedAndDocumented(t *testing.T) {
	var buf bytes.Buffer
	logDifferences(slog.New(slog.NewTextHandler(&buf, nil)))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(Differences()) {
		t.Fatalf("%d lines for %d differences:\n%s", len(lines), len(Differences()), buf.String())
	}
	for i, d := range Differences() {
		if d.What == "" || d.Why == "" || !strings.Contains(lines[i], "why=") {
			t.Errorf("difference %d without its reason: %q", i, lines[i])
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "### Differences from upstream")
	table, _, _ = strings.Cut(table, "\n\n## ")
	rows := 0
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "| we |") {
			rows++
		}
	}
	if !ok || rows != len(Differences()) {
		t.Errorf("README's differences table has %d rows, the agent logs %d", rows, len(Differences()))
	}
}
