package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readmeSection returns the code blocks of the README.md section titled
// title, in order.
func readmeSection(t *testing.T, title string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, found := strings.Cut(string(b), "\n## "+title+"\n")
	if !found {
		t.Fatalf("README.md has no section %q", title)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var blocks []string
	parts := strings.Split(sec, "```")
	for i := 1; i < len(parts); i += 2 {
		blocks = append(blocks, strings.TrimPrefix(parts[i], "\n"))
	}
	return blocks
}

var (
	demoDir = regexp.MustCompile(`/tmp/gpa-demo-[0-9]+`)
	spaces  = regexp.MustCompile(` {2,}`)
)

// normalise makes a sample comparable with a fresh run: the demo's
// temporary folder differs between runs, and with it the column widths;
// rows of equal count come in no fixed order.
func normalise(s string) []string {
	var out, rows []string
	inTable := false
	for l := range strings.Lines(demoDir.ReplaceAllString(s, "/tmp/gpa-demo-N")) {
		l = spaces.ReplaceAllString(strings.TrimRight(l, " \n"), "  ")
		switch {
		case strings.HasPrefix(l, "COUNT  "):
			inTable = true
			out = append(out, l)
		case inTable && l != "":
			rows = append(rows, l)
		default:
			out = append(out, l)
		}
	}
	slices.Sort(rows)
	return append(out, rows...)
}

// splitArgs splits a README command line the way a shell would for the
// quoting the samples use: single quotes only.
func splitArgs(line string) []string {
	var args []string
	for i, part := range strings.Split(line, "'") {
		if i%2 == 1 {
			args = append(args, part)
			continue
		}
		args = append(args, strings.Fields(part)...)
	}
	return args
}

// The learn and simulate samples of README.md are what the commands print
// on the demo's audit log kept in testdata, and every rules file they name
// exists.
func TestREADMESamples(t *testing.T) {
	blocks := readmeSection(t, "From Audit to Enforce: learn and simulate a rule set")
	if len(blocks) != 4 {
		t.Fatalf("the section has %d code blocks, want 4: commands, learned replay, strict replay, one request", len(blocks))
	}
	for _, m := range regexp.MustCompile(`--rules (\S+)`).FindAllStringSubmatch(strings.Join(blocks, "\n"), -1) {
		if p := m[1]; p != "IMDS_Rules.json" {
			if _, err := os.Stat(filepath.Join("../..", p)); err != nil {
				t.Errorf("README.md names %s: %v", p, err)
			}
		}
	}
	const auditLog = "testdata/demo-audit.log"
	code, learned, errOut := runCLI(t, "learn", "--audit-log", auditLog, "--format", "local")
	if code != exitOK {
		t.Fatalf("learn: exit %d: %s", code, errOut)
	}
	rules := writeFile(t, "IMDS_Rules.json", learned)
	for i, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"simulate", "--rules", rules, "--audit-log", auditLog}, exitOK},
		{[]string{"simulate", "--rules", "testdata/strict.json", "--audit-log", auditLog}, exitDenied},
	} {
		code, out, errOut := runCLI(t, tt.args...)
		if code != tt.code {
			t.Errorf("%q: exit %d, want %d: %s", tt.args, code, tt.code, errOut)
		}
		if diff := cmp.Diff(normalise(blocks[i+1]), normalise(out)); diff != "" {
			t.Errorf("README.md's sample %d is not what %q prints (-README +printed):\n%s", i+1, tt.args, diff)
		}
	}
	cmdLine, sample, _ := strings.Cut(blocks[3], "\n")
	args := splitArgs(strings.TrimPrefix(cmdLine, "$ msp-policy "))
	for i, a := range args {
		args[i] = strings.TrimPrefix(a, "examples/msp-policy/")
	}
	_, out, errOut := runCLI(t, args...)
	if diff := cmp.Diff(normalise(sample), normalise(out)); diff != "" {
		t.Errorf("README.md's %q sample is not what it prints (-README +printed):\n%s%s", cmdLine, diff, errOut)
	}
}
