package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, liveDeps()))
}

// deps are the live sources run wires into an Env; tests replace them.
type deps struct {
	now      func() time.Time
	runner   CommandRunner
	services ServiceQuerier
	version  func() (OSVersion, error)
}

func liveDeps() deps {
	return deps{now: time.Now, runner: execRunner{}, services: liveServices(), version: liveVersion()}
}

// execRunner runs commands in the C locale so their output can be read.
type execRunner struct{}

func (execRunner) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "SYSTEMD_PAGER=")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		line, _, _ := strings.Cut(strings.TrimSpace(string(ee.Stderr)), "\n")
		err = fmt.Errorf("%w: %s", err, shorten(line, 120))
	}
	return out, err
}

const synopsis = `usage: msp-validate [--json | --wide] [--root DIR] [--os linux|windows] [--agent-addr 127.0.0.1:3080]

Runs the checks of the MSP troubleshooting guide on this VM, read-only, and
prints a verdict (the root cause and its action) and one row per check.
--root DIR reads a mounted OS disk or a fixture tree instead: the rows that
need the running VM then say "not checked (offline: run on the VM)".
Exit status: 0 when no check failed, 1 when one did, 2 for a usage error.

Examples:
  sudo msp-validate
  sudo msp-validate --json > msp-validate.json
  sudo msp-validate --root /mnt/osdisk
  msp-validate --os windows --root /mnt/c

Flags:`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) int {
	fs := flag.NewFlagSet("msp-validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", defaultRoot, "read every file under this folder instead of the live system (fixture trees, mounted disks)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	wide := fs.Bool("wide", false, "print the table with FINDING and ACTION as columns, one line per check")
	goos := fs.String("os", hostOS(), "which checks to run: linux or windows")
	addr := fs.String("agent-addr", msp.ProxyAddr.String(), "the agent's listener (a loopback host:port); empty skips the check")
	// Parse would print the usage to stderr itself; it is printed below,
	// to stdout when asked for.
	fs.Usage = func() {}
	usage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprintln(w, synopsis)
		fs.PrintDefaults()
	}
	if len(args) == 1 && args[0] == "help" {
		args = []string{"-h"}
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return exitOK
	} else if err != nil {
		usage(stderr)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "msp-validate: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *goos != "linux" && *goos != "windows" {
		fmt.Fprintf(stderr, "msp-validate: --os must be linux or windows, not %q\n", *goos)
		return exitUsage
	}
	if *addr != "" && !isLoopback(*addr) {
		// The listener only ever binds loopback; refusing anything else
		// keeps the validator from probing other hosts.
		fmt.Fprintf(stderr, "msp-validate: --agent-addr %q is not a loopback host:port\n", *addr)
		return exitUsage
	}
	absRoot, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintln(stderr, "msp-validate:", err)
		return exitUsage
	}
	if fi, err := os.Stat(absRoot); err != nil || !fi.IsDir() {
		fmt.Fprintf(stderr, "msp-validate: --root %s is not a folder\n", *root)
		return exitUsage
	}
	e := &Env{OS: *goos, Root: os.DirFS(absRoot), Now: d.now(), AgentAddr: *addr}
	if live := absRoot == filepath.Clean(defaultRoot) && *goos == hostOS(); live {
		e.Runner, e.Services, e.Version = d.runner, d.services, d.version
	} else if !flagSet(fs, "agent-addr") {
		// A fixture tree or a mounted disk has no listener of its own.
		e.AgentAddr = ""
	}
	rep := Validate(ctx, e)
	switch {
	case *asJSON:
		err = writeJSON(stdout, e.OS, absRoot, rep)
	case *wide:
		err = writeWide(stdout, rep)
	default:
		err = writeTable(stdout, rep, tableWidth)
	}
	if err != nil {
		fmt.Fprintln(stderr, "msp-validate:", err)
		return exitFail
	}
	if rep.Result() == fail {
		return exitFail
	}
	return exitOK
}

func hostOS() string {
	if runtime.GOOS == "windows" {
		return "windows"
	}
	return "linux"
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// writeWide prints the verdict, then the rows as aligned columns CHECK,
// RESULT, FINDING, ACTION, one line each: for wide terminals and grep.
func writeWide(w io.Writer, rep *Report) error {
	writeVerdict(w, rep, 0)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tFINDING\tACTION")
	for _, r := range rep.Rows {
		action := r.Action
		if action == "" {
			action = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, r.Result(), r.Message, action)
	}
	return tw.Flush()
}

// report is the --json document.
type report struct {
	OS     string          `json:"os"`
	Root   string          `json:"root"`
	Result status.Severity `json:"result"`
	// Cause is the verdict: the first root cause, absent when nothing
	// failed.
	Cause  *jsonRow  `json:"cause,omitempty"`
	Checks []jsonRow `json:"checks"`
}

// jsonRow is a row in the --json document: status.Finding's fields, the
// result SKIP for a row that follows from another, and that row's check
// as cause.
type jsonRow struct {
	Check   string `json:"check"`
	Result  string `json:"result"`
	Finding string `json:"finding"`
	Action  string `json:"action,omitempty"`
	Cause   string `json:"cause,omitempty"`
}

func toJSON(r Row) jsonRow {
	return jsonRow{Check: r.Check, Result: r.Result(), Finding: r.Message, Action: r.Action, Cause: r.Cause}
}

func writeJSON(w io.Writer, goos, root string, rep *Report) error {
	doc := report{OS: goos, Root: root, Result: rep.Result(), Checks: make([]jsonRow, len(rep.Rows))}
	for i, r := range rep.Rows {
		doc.Checks[i] = toJSON(r)
	}
	if len(rep.Causes) > 0 {
		c := toJSON(rep.Causes[0])
		doc.Cause = &c
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
