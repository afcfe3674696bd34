package main

import (
	"fmt"
	"io"
	"strings"
)

// tableWidth is the terminal width the default table fits.
const tableWidth = 100

// writeVerdict prints the one-line verdict: the root cause and its action
// first, so a reader who stops there knows what to do. width 0 does not
// wrap.
func writeVerdict(w io.Writer, rep *Report, width int) {
	warnings, offline := 0, 0
	for _, r := range rep.Rows {
		switch {
		case strings.HasSuffix(r.Message, notChecked):
			offline++
		case r.Severity == warn && !r.Skipped():
			warnings++
		}
	}
	if len(rep.Causes) == 0 {
		line := "VERDICT: OK, no check failed"
		if warnings > 0 {
			line += fmt.Sprintf(" (%d %s)", warnings, plural(warnings, "warning", "warnings"))
		}
		if offline > 0 {
			line += fmt.Sprintf("; %d %s the running VM (offline disk)", offline, plural(offline, "check needs", "checks need"))
		}
		fmt.Fprintln(w, line)
		fmt.Fprintln(w)
		return
	}
	c := rep.Causes[0]
	writeWrapped(w, "VERDICT: FAIL ", fmt.Sprintf("%s: %s", c.Check, c.Message), width)
	writeWrapped(w, "ACTION:  ", c.Action, width)
	if len(rep.Causes) > 1 {
		var others []string
		for _, o := range rep.Causes[1:] {
			others = append(others, o.Check)
		}
		writeWrapped(w, "ALSO:    ", "failing on their own: "+strings.Join(others, ", "), width)
	}
	fmt.Fprintln(w)
}

// writeTable prints the verdict, then CHECK and RESULT for each row with
// its finding beside them and its action under the finding, both wrapped
// to width columns.
func writeTable(w io.Writer, rep *Report, width int) error {
	writeVerdict(w, rep, width)
	checkWidth := len("CHECK")
	for _, r := range rep.Rows {
		checkWidth = max(checkWidth, len(r.Check))
	}
	indent := checkWidth + 2 + len("RESULT") + 2
	text := width - indent
	fmt.Fprintf(w, "%-*s  %-6s  %s\n", checkWidth, "CHECK", "RESULT", "FINDING / ACTION")
	pad := strings.Repeat(" ", indent)
	for _, r := range rep.Rows {
		lines := wrap(r.Message, text)
		if r.Action != "" {
			lines = append(lines, wrap("action: "+r.Action, text)...)
		}
		fmt.Fprintf(w, "%-*s  %-6s  %s\n", checkWidth, r.Check, r.Result(), lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "%s%s\n", pad, l)
		}
	}
	return nil
}

// writeWrapped prints text after label, wrapped with its continuation lines
// under the text.
func writeWrapped(w io.Writer, label, text string, width int) {
	lines := wrap(text, width-len(label))
	fmt.Fprintf(w, "%s%s\n", label, lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(w, "%s%s\n", strings.Repeat(" ", len(label)), l)
	}
}

// wrap breaks s into lines of at most width runes at spaces, cutting words
// longer than a line. A width below 20 does not wrap. It returns at least
// one line.
func wrap(s string, width int) []string {
	if width < 20 {
		return []string{s}
	}
	var lines []string
	var cur []rune
	for _, word := range strings.Fields(s) {
		wr := []rune(word)
		for len(wr) > width {
			if len(cur) > 0 {
				lines, cur = append(lines, string(cur)), nil
			}
			lines, wr = append(lines, string(wr[:width])), wr[width:]
		}
		switch {
		case len(cur) == 0:
			cur = wr
		case len(cur)+1+len(wr) <= width:
			cur = append(append(cur, ' '), wr...)
		default:
			lines, cur = append(lines, string(cur)), wr
		}
	}
	if len(cur) > 0 || len(lines) == 0 {
		lines = append(lines, string(cur))
	}
	return lines
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
