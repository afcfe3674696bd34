package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults of WaitOptions.
const (
	DefaultAgentAddr    = "127.0.0.1:3080"
	DefaultPollInterval = 100 * time.Millisecond
	DefaultQueryTimeout = 2 * time.Second
)

// MaxReportBytes bounds what Report prints. cloud-init cuts its whole
// failure report to 512 characters, and the report carries more than our
// stdout.
const MaxReportBytes = 400

// Exit codes of azure-proxy-agent --status.
const (
	ExitFinished    = 0 // provisioning finished without error
	ExitNotFinished = 1 // not finished within the wait, or agent unreachable
	ExitFailed      = 2 // finished with errors
)

// WaitOptions configures WaitProvisioned. The zero value makes one query to
// the local agent.
type WaitOptions struct {
	// Addr is the agent listener, host:port. Empty means DefaultAgentAddr.
	Addr string
	// Wait is how long to keep polling while provisioning is not finished,
	// counted from Start. Zero means a single query.
	Wait time.Duration
	// Start is when the command started: it is the query tick sent to the
	// agent and the origin of Wait. Zero means now. The CLI passes its
	// process start time, as upstream counts the wait in process uptime.
	Start time.Time
	// Interval is the time between polls. Zero means DefaultPollInterval.
	Interval time.Duration
	// QueryTimeout bounds one query, so a listener that accepts and never
	// answers cannot hold the command past its wait. Zero means
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// Client sends the queries. Nil means a client that uses no proxy from
	// the environment: the query is for the local agent only.
	Client *http.Client
}

// WaitResult is the outcome of WaitProvisioned.
type WaitResult struct {
	// Finished is the last answer's finished field.
	Finished bool
	// ErrorMessage is the last answer's errorMessage.
	ErrorMessage string
	// Queries is how many queries were sent.
	Queries int
	// Answered is how many of them got a valid answer.
	Answered int
	// LastError is the last query's failure, nil if it was answered.
	LastError error
}

// ExitCode maps r to the exit code of azure-proxy-agent --status.
func (r WaitResult) ExitCode() int {
	switch {
	case !r.Finished:
		return ExitNotFinished
	case r.ErrorMessage != "":
		return ExitFailed
	}
	return ExitFinished
}

// Report returns what the command prints on stdout, at most MaxReportBytes
// bytes: nothing on success, the failure lines when finished with errors,
// and one explanatory line otherwise.
func (r WaitResult) Report() string {
	var s string
	switch r.ExitCode() {
	case ExitFinished:
		return ""
	case ExitFailed:
		s = r.ErrorMessage
	default:
		if r.LastError != nil {
			s = "Failed to query the current provision state with error: " + r.LastError.Error() + ".\n"
		} else {
			s = "Provisioning has not finished yet.\n"
		}
	}
	return clip(s, MaxReportBytes)
}

// clip cuts s to at most n bytes. It prefers ending after a whole line and
// never splits a UTF-8 sequence; a cut is marked with "...".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "...\n"
	cut := s[:n-len(mark)]
	for !utf8.ValidString(cut) {
		cut = cut[:len(cut)-1]
	}
	if i := strings.LastIndexByte(cut, '\n'); i >= len(cut)/2 {
		// Whole lines fit up to i; keep them and mark the loss.
		return cut[:i+1] + mark
	}
	return cut + mark
}

// WaitProvisioned polls the agent's /provision until it reports finished
// or the wait has passed. A refused or failed connection counts as "not
// finished yet", because the agent may still be starting. The first query
// carries x-ms-azure-notify to wake the key latch. The error is non-nil
// only for invalid options or when ctx ends first; the result is valid
// either way.
func WaitProvisioned(ctx context.Context, opts *WaitOptions) (WaitResult, error) {
	var o WaitOptions
	if opts != nil {
		o = *opts
	}
	if o.Addr == "" {
		o.Addr = DefaultAgentAddr
	}
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	if o.Interval <= 0 {
		o.Interval = DefaultPollInterval
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{}}
		defer o.Client.CloseIdleConnections()
	}
	if o.Wait < 0 {
		return WaitResult{}, fmt.Errorf("%w: negative wait %v", ErrInvalidOptions, o.Wait)
	}
	url := "http://" + o.Addr + ProvisionPath
	tick := strconv.FormatInt(o.Start.UnixNano(), 10)
	deadline := o.Start.Add(o.Wait)

	var res WaitResult
	for {
		st, err := queryProvision(ctx, o.Client, url, tick, res.Queries == 0, o.QueryTimeout)
		res.Queries++
		res.LastError = err
		if err == nil {
			res.Answered++
			res.Finished, res.ErrorMessage = st.Finished, st.ErrorMessage
			if st.Finished {
				return res, nil
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return res, nil
		}
		t := time.NewTimer(min(o.Interval, wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		case <-t.C:
		}
	}
}

func queryProvision(ctx context.Context, c *http.Client, url, tick string, notify bool, timeout time.Duration) (ProvisionState, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ProvisionState{}, err
	}
	req.Header.Set(HeaderMetadata, "true")
	req.Header.Set(HeaderTimeTick, tick)
	if notify {
		req.Header.Set(HeaderNotify, "true")
	}
	resp, err := c.Do(req)
	if err != nil {
		return ProvisionState{}, err
	}
	defer resp.Body.Close()
	// The answer is two fields; anything much larger is not the agent.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return ProvisionState{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return ProvisionState{}, fmt.Errorf("%w: /provision answered %s", ErrInvalidStatus, resp.Status)
	}
	var raw struct {
		Finished     *bool   `json:"finished"`
		ErrorMessage *string `json:"errorMessage"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return ProvisionState{}, fmt.Errorf("%w: /provision body: %w", ErrInvalidStatus, err)
	}
	if raw.Finished == nil {
		return ProvisionState{}, fmt.Errorf("%w: /provision body has no finished field", ErrInvalidStatus)
	}
	st := ProvisionState{Finished: *raw.Finished}
	if raw.ErrorMessage != nil {
		st.ErrorMessage = *raw.ErrorMessage
	}
	return st, nil
}
