package main

import (
	"os"
	"strings"
	"testing"
)

const (
	sampleBegin = "<!-- msp-fleet sample: written by TestReadmeSample (examples/msp-fleet); GPA_UPDATE_README=1 rewrites it -->\n"
	sampleEnd   = "<!-- end of msp-fleet sample -->\n"
)

// TestReadmeSample runs the three commands of the README's "A fleet"
// section against the fake and fails when the README shows other output.
func TestReadmeSample(t *testing.T) {
	f := newFixture(t, 8, 1)
	spec := f.file(t, "enforce.json", enforceSpec+"\n")
	var b strings.Builder
	b.WriteString(sampleBegin)
	b.WriteString("```\n$ cat enforce.json\n" + enforceSpec + "\n")
	for _, args := range [][]string{
		{"inventory", "--subscriptions", sub},
		{"drift", "--subscriptions", sub, "--want", "enforce.json"},
		{"apply", "--subscriptions", sub, "--want", "enforce.json", "--waves", "25%,100%", "--max-parallel", "1", "--state", "rollout.state"},
	} {
		b.WriteString("\n$ msp-fleet " + strings.Join(quote(args), " ") + "\n")
		run := append([]string(nil), args...)
		for i, a := range run {
			switch a {
			case "enforce.json":
				run[i] = spec
			case "rollout.state":
				run[i] = f.dir + "/rollout.state"
			}
		}
		if args[0] == "apply" {
			run = append(run, "--poll-interval", "1ms")
		}
		code, out, errs := f.run(t, run...)
		if errs != "" || (code != exitOK && code != exitDrift) {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
		b.WriteString(out)
	}
	b.WriteString("```\n")
	b.WriteString(sampleEnd)
	got := b.String()

	const readme = "../../README.md"
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i, j := strings.Index(text, sampleBegin), strings.Index(text, sampleEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no msp-fleet sample markers")
	}
	// The KQL the README documents is what the command prints.
	_, query, _ := f.run(t, "inventory", "--where", "tags['env'] =~ 'prod'", "--show-query")
	if !strings.Contains(text, "```kusto\n"+query+"```\n") {
		t.Errorf("README.md does not show the current query:\n%s", query)
	}
	have := text[i : j+len(sampleEnd)]
	if have == got {
		return
	}
	if os.Getenv("GPA_UPDATE_README") == "1" {
		if err := os.WriteFile(readme, []byte(text[:i]+got+text[j+len(sampleEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the README's msp-fleet sample drifted from the command's output; run GPA_UPDATE_README=1 go test ./examples/msp-fleet -run TestReadmeSample\nwant:\n%s", got)
}

func quote(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}
