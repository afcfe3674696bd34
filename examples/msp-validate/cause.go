package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/metadatasec/gpa/status"
)

// Row is one line of the report: a finding and, when the finding only
// follows from another row's failure, that row's check.
type Row struct {
	status.Finding
	// Cause is the check whose failure this row follows from. The row is
	// then skipped: its own action would only repeat, in other words, what
	// fixing the cause does.
	Cause string
}

// Skipped tells whether the row follows from another row's failure.
func (r Row) Skipped() bool { return r.Cause != "" }

// Result is what the RESULT column shows: OK, WARN, FAIL, or SKIP for a row
// that follows from another's failure.
func (r Row) Result() string {
	if r.Skipped() {
		return "SKIP"
	}
	return r.Severity.String()
}

// Report is the outcome of a run.
type Report struct {
	// Rows are every check in a fixed order.
	Rows []Row
	// Causes are the failed rows no other failure explains, the most basic
	// first. The first is the verdict.
	Causes []Row
}

// Result is the worst result among the rows that are not skipped.
func (r *Report) Result() status.Severity {
	w := ok
	for _, row := range r.Rows {
		if !row.Skipped() {
			w = max(w, row.Severity)
		}
	}
	return w
}

// A consequence says which rows follow from a failed root row. all holds
// every row by check, for consequences that depend on other rows.
type consequence struct {
	root    string
	follows func(r status.Finding, all map[string]status.Finding) bool
}

// consequences lists the roots from the most basic: a machine the agent
// cannot be installed on or is not installed on explains everything about
// the agent; a kernel or cgroup that cannot run eBPF explains the
// redirector's failure; an agent that does not run explains a silent
// listener and an old status; one module's failure explains the overall
// status and the provisioning records that quote it.
var consequences = []consequence{
	{"os.version", func(r status.Finding, _ map[string]status.Finding) bool { return r.Check != "deployment" }},
	{"agent.binary", func(r status.Finding, _ map[string]status.Finding) bool { return agentRow(r.Check) }},
	{"kernel", func(r status.Finding, all map[string]status.Finding) bool {
		return strings.HasPrefix(r.Check, "cgroup2.") || r.Check == "btf" || ebpfFollows(r, all)
	}},
	{"cgroup2.filesystem", func(r status.Finding, all map[string]status.Finding) bool {
		return r.Check == "cgroup2.mount" || ebpfFollows(r, all)
	}},
	{"cgroup2.mount", ebpfFollows},
	{"btf", ebpfFollows},
	{"service.eBPFCore", func(r status.Finding, all map[string]status.Finding) bool {
		return r.Check == "service.NetEbpfExt" || ebpfFollows(r, all)
	}},
	{"service.NetEbpfExt", ebpfFollows},
	{"agent.unit", func(r status.Finding, _ map[string]status.Finding) bool {
		return r.Check == "agent.service" || r.Check == "agent.process" || runningFollows(r)
	}},
	{"agent.service", func(r status.Finding, _ map[string]status.Finding) bool {
		return r.Check == "agent.process" || runningFollows(r)
	}},
	{"service.GuestProxyAgent", func(r status.Finding, _ map[string]status.Finding) bool { return runningFollows(r) }},
	{"agent.process", func(r status.Finding, _ map[string]status.Finding) bool { return runningFollows(r) }},
	{"status.file", func(r status.Finding, _ map[string]status.Finding) bool {
		return strings.HasPrefix(r.Check, "status.") && r.Severity != fail
	}},
	{"status.ebpfProgramStatus", moduleFollows(status.ModuleRedirector)},
	{"status.keyLatchStatus", moduleFollows(status.ModuleKeyLatch)},
	{"status.proxyListenerStatus", moduleFollows(status.ModuleListener)},
}

// independent rows report a problem of their own whatever else fails: a
// key or status file others can touch.
var independent = []string{"keys.folder", "keys.files", "status.file.mode"}

// agentRow tells whether a check looks at the installed agent.
func agentRow(check string) bool {
	switch check {
	case "agent.unit", "agent.service", "agent.process", "agent.listener", "provisioning", "provisioning.tag", "keys.folder", "keys.files":
		return true
	}
	return strings.HasPrefix(check, "status.")
}

// runningFollows tells whether a row follows from an agent that does not
// run: nothing answers, the status is old or missing.
func runningFollows(r status.Finding) bool {
	return r.Check == "agent.listener" || r.Check == "provisioning.tag" || r.Check == "keys.folder" || strings.HasPrefix(r.Check, "status.")
}

// ebpfFollows tells whether a row follows from a host that cannot run the
// eBPF redirector: the redirector's own failure, and the records that
// quote only it.
func ebpfFollows(r status.Finding, all map[string]status.Finding) bool {
	return moduleFollows(status.ModuleRedirector)(r, all) || r.Check == "status.ebpfProgramStatus"
}

// moduleFollows returns the consequence of a failed agent module: the
// overall status when no other module fails, and the listener's answer and
// status.tag when they quote no other module.
func moduleFollows(m status.Module) func(status.Finding, map[string]status.Finding) bool {
	return func(r status.Finding, all map[string]status.Finding) bool {
		others := otherModules(m)
		switch r.Check {
		case "status.proxyAgentStatus":
			for _, o := range others {
				if all["status."+o.FieldName()].Severity == fail {
					return false
				}
			}
			return true
		case "agent.listener", "provisioning.tag":
			if !strings.Contains(r.Message, m.FieldName()) {
				return false
			}
			for _, o := range others {
				if strings.Contains(r.Message, o.FieldName()) {
					return false
				}
			}
			return true
		}
		return false
	}
}

func otherModules(m status.Module) []status.Module {
	var out []status.Module
	for _, o := range []status.Module{status.ModuleRedirector, status.ModuleKeyLatch, status.ModuleListener} {
		if o != m {
			out = append(out, o)
		}
	}
	return out
}

// attribute finds the root causes among rows and marks the rows that
// follow from them. A row that is not checked (offline) is never skipped,
// an OK row never, and a provisioning row that only predicts what the
// failure does to provisioning (the guide's table, row 4) follows from any
// cause.
func attribute(rows []status.Finding) *Report {
	all := make(map[string]status.Finding, len(rows))
	for _, r := range rows {
		all[r.Check] = r
	}
	rep := &Report{Rows: make([]Row, len(rows))}
	for i, r := range rows {
		rep.Rows[i] = Row{Finding: r}
	}
	isCause := map[string]bool{}
	for _, c := range consequences {
		root, found := all[c.root]
		if !found || root.Severity != fail || skippedIn(rep, c.root) {
			continue
		}
		isCause[c.root] = true
		for i := range rep.Rows {
			r := &rep.Rows[i]
			if r.Check == c.root || r.Skipped() || r.Severity == ok || isCause[r.Check] || strings.HasSuffix(r.Message, notChecked) ||
				(slices.Contains(independent, r.Check) && r.Severity == fail) {
				continue
			}
			if c.follows(r.Finding, all) || predictsProvisioning(r.Finding) {
				skip(r, root)
			}
		}
	}
	for _, c := range consequences {
		if isCause[c.root] {
			rep.Causes = append(rep.Causes, rowOf(rep, c.root))
		}
	}
	for _, r := range rep.Rows {
		if r.Severity == fail && !r.Skipped() && !isCause[r.Check] {
			if predictsProvisioning(r.Finding) && len(rep.Causes) > 0 {
				continue
			}
			rep.Causes = append(rep.Causes, r)
		}
	}
	// A failure the rules do not know, such as a stale status, can still
	// explain the prediction of the provisioning row.
	if len(rep.Causes) > 0 {
		for i := range rep.Rows {
			if r := &rep.Rows[i]; !r.Skipped() && predictsProvisioning(r.Finding) && r.Check != rep.Causes[0].Check {
				skip(r, rep.Causes[0].Finding)
			}
		}
	}
	return rep
}

// predictsProvisioning tells whether r is the provisioning row saying what
// another failure does to provisioning.
func predictsProvisioning(r status.Finding) bool {
	return r.Check == "provisioning" && r.Severity == fail && strings.Contains(r.Message, "row 4")
}

func skip(r *Row, root status.Finding) {
	msg := fmt.Sprintf("skipped: follows from the %s failure", root.Check)
	if r.Check == "provisioning" {
		// The guide's table row is worth keeping: it names the error a
		// deployment would show.
		msg += "; " + r.Message
	}
	r.Cause, r.Message, r.Action = root.Check, msg, ""
}

func skippedIn(rep *Report, check string) bool { return rowOf(rep, check).Skipped() }

func rowOf(rep *Report, check string) Row {
	for _, r := range rep.Rows {
		if r.Check == check {
			return r
		}
	}
	return Row{}
}
