// Command msp-policy simulates a rule set against real traffic and learns
// one from the audit log, for the Audit → learn → simulate → Enforce rollout.
//
//	msp-policy simulate --rules FILE --endpoint imds --url URL [--method GET] [--user NAME] [--uid N] [--groups a,b] [--exe PATH] [--json]
//	msp-policy simulate --rules FILE --endpoint imds --audit-log FILE|GLOB|DIR... [--json]
//	msp-policy learn --audit-log FILE|GLOB|DIR... [--endpoint imds] [--group-by exe|user|both] [--format item|local|gallery] [--json]
//	msp-policy help [simulate|learn]
//
// simulate exits 0 when nothing the agent let through would be denied and 3
// otherwise, so it can gate a rollout; 1 on errors and 2 on bad usage.
// -h, --help and help print a synopsis and exit 0, on the program and on
// each command.
//
// simulate --user resolves the name to a uid on this machine, as the agent
// would on the VM; a name this machine does not know needs --uid. The uid
// decides the elevated privilege, so it is never guessed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/policy"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitUsage  = 2
	exitDenied = 3
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const synopsis = `usage: msp-policy <command> [flags]

Commands:
  learn     write an allow-list from an audit log
  simulate  decide one request, or replay an audit log, against a candidate rule set
  help      this text; help <command> for a command's flags

The rollout: run in Audit, learn from the audit log, simulate the learned
(or a hand-written) rule set against the same log, then Enforce.

Examples:
  msp-policy learn --audit-log audit.log --format local > IMDS_Rules.json
  msp-policy simulate --rules IMDS_Rules.json --audit-log audit.log; echo "exit $?"
  msp-policy simulate --rules strict.json --url /metadata/instance --user root

simulate exits 0 when nothing the agent let through would be denied, 3 when
something would, 1 on errors and 2 on bad usage.`

const (
	simulateSynopsis = `usage: msp-policy simulate --rules FILE [--endpoint imds] --url URL [--method GET] [--user NAME | --uid N] [--groups a,b] [--exe PATH] [--json]
       msp-policy simulate --rules FILE [--endpoint imds] --audit-log FILE|GLOB|DIR... [--json]

Decides one request (--url) with the canonical and the legacy matcher, or
replays an audit log (--audit-log) and reports what the candidate changes.
--user is resolved to a uid on this machine; give --uid when the user exists
only on the VM. Exit status 3 when the candidate denies a request the agent
let through.

Flags:`
	learnSynopsis = `usage: msp-policy learn --audit-log FILE|GLOB|DIR... [--endpoint imds] [--group-by exe|user|both] [--format item|local|gallery] [--id ID] [--location LOC] [--json]

Writes an allow-list (default Deny) of what the audit log shows, one identity
per caller, to standard output; what it could not learn goes to standard
error.

Flags:`
)

func run(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, synopsis)
		return exitUsage
	}
	switch args[0] {
	case "simulate":
		return simulate(args[1:], stdout, stderr)
	case "learn":
		return learn(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		fmt.Fprintln(stdout, synopsis)
		return exitOK
	case "help":
		switch {
		case len(args) == 1:
			fmt.Fprintln(stdout, synopsis)
			return exitOK
		case args[1] == "simulate":
			return simulate([]string{"-h"}, stdout, stderr)
		case args[1] == "learn":
			return learn([]string{"-h"}, stdout, stderr)
		}
		fmt.Fprintf(stderr, "msp-policy help: unknown command %q (want simulate or learn)\n", args[1])
		return exitUsage
	}
	fmt.Fprintf(stderr, "msp-policy: unknown command %q (want simulate, learn or help)\n", args[0])
	return exitUsage
}

// parse parses a command's flags. Asked for help, it prints the synopsis
// and flags on stdout and returns exitOK as code; on a bad flag it returns
// exitUsage. done says whether the command should return code at once.
func parse(fs *flag.FlagSet, synopsis string, args []string, stdout io.Writer) (code int, done bool) {
	// Parse would print the usage to stderr itself; it is printed below,
	// to where it belongs.
	fs.Usage = func() {}
	err := fs.Parse(args)
	usage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprintln(w, synopsis)
		fs.PrintDefaults()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(stdout)
		return exitOK, true
	case err != nil:
		usage(fs.Output())
		return exitUsage, true
	}
	return exitOK, false
}

func simulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rulesFile := fs.String("rules", "", "candidate rule set (key-status item, local rules file or gallery version body)")
	endpoint := fs.String("endpoint", "imds", "imds, wireserver or hostga")
	localMode := fs.String("mode", "enforce", "mode for a local rules file, which carries none")
	url := fs.String("url", "", "request target to decide, e.g. /metadata/instance?api-version=2021-02-01")
	method := fs.String("method", "GET", "request method")
	user := fs.String("user", "root", "caller's user name, resolved to a uid on this machine")
	uid := fs.Uint("uid", 0, "caller's uid (0 means elevated); needed when --user is not a user of this machine")
	groups := fs.String("groups", "", "caller's groups, comma-separated")
	exe := fs.String("exe", "", "caller's executable path")
	var auditLog auditLogs
	fs.Var(&auditLog, "audit-log", "replay audit logs instead of one request; "+auditLogsHelp)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, done := parse(fs, simulateSynopsis, args, stdout); done {
		return code
	}
	if *rulesFile == "" || (*url == "") == (len(auditLog) == 0) {
		fmt.Fprintln(stderr, "msp-policy simulate: --rules and exactly one of --url or --audit-log are required")
		return exitUsage
	}
	ep, err := msp.ParseEndpoint(*endpoint)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitUsage
	}
	mode, err := msp.ParseMode(*localMode)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitUsage
	}
	data, err := os.ReadFile(*rulesFile)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitError
	}
	item, format, err := policy.ReadRules(data, mode)
	if err != nil {
		fmt.Fprintf(stderr, "msp-policy: %s: %v\n", *rulesFile, err)
		return exitError
	}
	if err := item.Validate(); err != nil {
		if format == policy.FormatLocal {
			// The agent refuses an invalid local file and fails closed
			// (docs/protocol.md §4.8); simulate what it would do.
			fmt.Fprintf(stderr, "msp-policy: %s: the agent would refuse this file and deny everything: %v\n", *rulesFile, err)
			item = &msp.AuthorizationItem{Mode: item.Mode, DefaultAccess: msp.AccessDeny, ID: item.ID}
		} else {
			fmt.Fprintf(stderr, "msp-policy: warning: %s: %v\n", *rulesFile, err)
		}
	}
	items := map[msp.Endpoint]*msp.AuthorizationItem{ep: item}
	if ep == msp.EndpointWireServer {
		items[msp.EndpointHostGA] = item // HostGA follows the WireServer rules
	}
	sim, err := policy.NewSimulator(items)
	if err != nil {
		fmt.Fprintf(stderr, "msp-policy: %s: %v\n", *rulesFile, err)
		return exitError
	}

	if *url != "" {
		caller, err := resolveCaller(*user, flagSet(fs, "user"), uint32(*uid), flagSet(fs, "uid"), lookupUser)
		if err != nil {
			fmt.Fprintln(stderr, "msp-policy simulate:", err)
			return exitUsage
		}
		claims := &msp.Claims{UserID: caller.uid, UserName: caller.name, ProcessFullPath: *exe, RunAsElevated: caller.uid == 0}
		if i := strings.LastIndexByte(*exe, '/'); i >= 0 {
			claims.ProcessName = (*exe)[i+1:]
		}
		if *groups != "" {
			claims.UserGroups = strings.Split(*groups, ",")
		} else {
			claims.UserGroups = caller.groups
		}
		out := sim.Decide(ep, &msp.Request{Method: *method, RawURI: *url, Claims: claims})
		if *asJSON {
			writeJSON(stdout, out)
		} else {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MATCHER\tDECISION\tREASON\tPRIVILEGE\tIDENTITY\tERROR")
			for _, d := range []msp.Decision{out.Canonical, out.Legacy} {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Matcher, d.Verdict, d.Reason, dash(d.Privilege), dash(d.Identity), dash(d.CanonError))
			}
			tw.Flush()
		}
		if out.Canonical.Verdict == msp.VerdictDeny {
			return exitDenied
		}
		return exitOK
	}

	src, _, err := policy.AuditLogs(auditLog)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitError
	}
	rep, err := sim.ReplayFrom(src)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitError
	}
	if *asJSON {
		writeJSON(stdout, rep)
	} else {
		fmt.Fprintf(stdout, "replayed %d requests to %s (ignored: %d to endpoints without a candidate rule set, %d not to a host endpoint)\n",
			rep.Total, ep, rep.OtherEndpoints, rep.NotProtected)
		fmt.Fprintf(stdout, "  allowed %d, audited %d, denied %d (%d of them let through today); legacy matcher differs on %d\n",
			rep.Allowed, rep.Audited, rep.Denied, rep.NewlyDenied, rep.Divergent)
		if len(rep.Changes) > 0 {
			fmt.Fprintln(stdout, "\nchanges from what the agent decided, largest first:")
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "COUNT\tWAS\tNOW\tEXE\tUSER\tPATH\tEXAMPLE")
			for _, c := range rep.Changes {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Count, c.Was, c.Now, dash(c.Exe), dash(c.User), c.PathPrefix, c.Example)
			}
			tw.Flush()
		}
	}
	if rep.WouldDeny() {
		return exitDenied
	}
	return exitOK
}

func learn(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("learn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var auditLog auditLogs
	fs.Var(&auditLog, "audit-log", "audit logs to learn from; "+auditLogsHelp)
	endpoint := fs.String("endpoint", "imds", "imds, wireserver or hostga")
	groupBy := fs.String("group-by", "exe", "what identifies a caller: exe, user or both")
	format := fs.String("format", "item", "output shape: item, local or gallery")
	id := fs.String("id", "", "rule set id (default learned-<endpoint>)")
	location := fs.String("location", "", "location for a gallery body")
	asJSON := fs.Bool("json", false, "print the rules and what was skipped as one JSON document")
	if code, done := parse(fs, learnSynopsis, args, stdout); done {
		return code
	}
	if len(auditLog) == 0 {
		fmt.Fprintln(stderr, "msp-policy learn: --audit-log is required")
		return exitUsage
	}
	ep, err1 := msp.ParseEndpoint(*endpoint)
	g, err2 := policy.ParseGroupBy(*groupBy)
	f, err3 := policy.ParseFormat(*format)
	if err := errors.Join(err1, err2, err3); err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitUsage
	}
	src, _, err := policy.AuditLogs(auditLog)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitError
	}
	res, err := policy.LearnFrom(src, &policy.LearnOptions{Endpoint: ep, GroupBy: g, ID: *id})
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitError
	}
	if *asJSON {
		writeJSON(stdout, res)
		return exitOK
	}
	out, err := policy.WriteRules(res.Item, f, *location)
	if err != nil {
		fmt.Fprintln(stderr, "msp-policy:", err)
		return exitError
	}
	stdout.Write(out)
	for _, s := range res.Skipped {
		fmt.Fprintf(stderr, "msp-policy: skipped %s %s from %s: %s\n", s.Record.Method, s.Record.URL, dash(s.Record.ProcessFullPath), s.Reason)
	}
	if more := res.SkippedTotal - len(res.Skipped); more > 0 {
		fmt.Fprintf(stderr, "msp-policy: and %d more records skipped\n", more)
	}
	return exitOK
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
