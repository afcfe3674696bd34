package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

// listenerTimeout bounds the /provision query; the listener answers it from
// memory, so anything slower is already a finding.
const listenerTimeout = 500 * time.Millisecond

// checkListener asks the agent's listener for its provisioning state, the
// way --status does but without x-ms-azure-notify: the validator must not
// make the key latch poll. A time tick of 0 makes the answer "finished"
// whenever provisioning finished at all.
func checkListener(ctx context.Context, e *Env, restart string) status.Finding {
	const check = "agent.listener"
	if e.AgentAddr == "" {
		return row(check, warn, actionOffline+", without --root and --os, to query the listener", notChecked)
	}
	// No notify header: the validator looks, it does not wake the latch.
	st, err := status.QueryProvision(ctx, &status.QueryOptions{Addr: e.AgentAddr, Timeout: listenerTimeout})
	var answer *status.AnswerError
	switch {
	case errors.Is(err, status.ErrInvalidOptions):
		return row(check, fail, "give --agent-addr as host:port", "bad listener address: %v", err)
	case errors.As(err, &answer):
		return row(check, fail, restart, "GET %s answered %s, not 200 OK: another program may hold the port", msp.ProvisionPath, answer.Status)
	case errors.Is(err, status.ErrInvalidStatus):
		return row(check, fail, restart, "GET %s answered something that is not the agent's provisioning state", msp.ProvisionPath)
	case err != nil:
		return row(check, fail, restart, "nothing answers GET %s: %v", msp.ProvisionPath, shortNetErr(err))
	}
	var lines []string
	for l := range strings.Lines(st.ErrorMessage) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	switch {
	case !st.Finished:
		return row(check, warn, "wait up to 120 s after the agent starts, then run again", "answers GET %s: provisioning not finished yet", msp.ProvisionPath)
	case st.ErrorMessage != "":
		return row(check, fail, "see the status.* rows for the cause", "answers GET %s: provisioning finished with errors: %s", msp.ProvisionPath, shorten(strings.Join(lines, " | "), 200))
	}
	return row(check, ok, "", "answers GET %s: provisioning finished without error", msp.ProvisionPath)
}

// shortNetErr drops the URL from a client error: the address is the same
// on every row and only the cause matters.
func shortNetErr(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// checkStatusFile reads status.json at path (relative to the root) and
// returns a row for the file and the status.Diagnose rows.
//
// Offline, the file is what the agent last wrote before the disk was
// detached: its age says nothing about the agent, so it is not judged.
func checkStatusFile(e *Env, path, shownPath string, windows, offline bool) []status.Finding {
	const check = "status.file"
	data, err := fs.ReadFile(e.Root, path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return []status.Finding{row(check, fail, pickOS(windows,
			"the agent has not written its status: check sc query GuestProxyAgent and the ProxyAgent VM extension",
			"the agent has not written its status: check systemctl status azure-proxy-agent (it writes status.json once provisioning finishes or after 60 s)"),
			"%s is missing", shownPath)}
	case err != nil:
		return []status.Finding{row(check, fail, "run as root (or Administrator)", "cannot read %s: %v", shownPath, errors.Unwrap(err))}
	}
	s, err := status.Parse(data)
	if err != nil {
		return []status.Finding{row(check, fail, "the agent rewrites the file every 60 s; if it stays unreadable, restart the agent", "%s is not a valid status: %v", shownPath, err)}
	}
	out := []status.Finding{row(check, ok, "", "%s read (agent version %s)", shownPath, nonEmpty(s.ProxyAgentStatus.Version))}
	for _, f := range status.Diagnose(s, &status.DiagnoseOptions{Now: e.Now, Windows: windows}) {
		if offline && f.Check == "status.timestamp" && !s.Timestamp.Time.IsZero() {
			f = row(f.Check, warn, actionOffline, "written %s; its age is %s", s.Timestamp.Time.UTC().Format(time.RFC3339), notChecked)
		}
		if windows {
			f = windowsEBPFSetup(f)
		}
		out = append(out, f)
	}
	return out
}

func pickOS(windows bool, win, linux string) string {
	if windows {
		return win
	}
	return linux
}

func nonEmpty(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "..."
}

// quoted renders text read from the machine for a row: quoted so odd bytes
// stay visible, and shortened.
func quoted(s string) string { return fmt.Sprintf("%q", shorten(s, 120)) }
