package status

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// Defaults of WaitOptions.
const (
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
	// Addr is the agent listener, host:port. Empty means msp.ProxyAddr.
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
	// Dial opens the connection of each query, to Addr over "tcp". Nil
	// means a net.Dialer's DialContext: a direct connection that uses no
	// proxy from the environment, as the query is for the local agent
	// only. The query itself is written and read here rather than by an
	// http.Client, whose transport would link TLS and HTTP/2 into every
	// program that asks for the state (about 2 MB in the agent).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnQueryError, if set, is called with each query's failure as it
	// happens: upstream prints QueryErrorLine for every one.
	OnQueryError func(error)
}

// QueryErrorLine is the line upstream's --status prints on stdout for each
// query that failed, the agent being down for example. The error text
// after "with error: " is ours.
func QueryErrorLine(err error) string {
	return "Failed to query the current provision state with error: " + err.Error() + ".\n"
}

// Stdout is what upstream's --status prints last on stdout, byte for
// byte: the errorMessage and a newline when finished with errors, nothing
// otherwise (not finished, or finished without error). Report is our
// shorter explanation, for stderr.
func (r WaitResult) Stdout() string {
	if r.ExitCode() == ExitFailed {
		return r.ErrorMessage + "\n"
	}
	return ""
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

// Report returns our explanation of r, at most MaxReportBytes bytes:
// nothing on success, the failure lines when finished with errors, and one
// explanatory line otherwise. The command writes it to stderr; its stdout
// is upstream's (QueryErrorLine, Stdout).
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
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	if o.Interval <= 0 {
		o.Interval = DefaultPollInterval
	}
	if o.Wait < 0 {
		return WaitResult{}, fmt.Errorf("%w: negative wait %v", ErrInvalidOptions, o.Wait)
	}
	tick := strconv.FormatInt(o.Start.UnixNano(), 10)
	deadline := o.Start.Add(o.Wait)

	var res WaitResult
	for {
		st, err := QueryProvision(ctx, &QueryOptions{Addr: o.Addr, Tick: tick, Notify: res.Queries == 0, Timeout: o.QueryTimeout, Dial: o.Dial})
		res.Queries++
		res.LastError = err
		if err != nil && o.OnQueryError != nil {
			o.OnQueryError(err)
		}
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

// maxProvisionBody bounds the answer's body. The answer is two fields;
// anything much larger is not the agent.
const maxProvisionBody = 64 << 10

// AnswerError is a /provision answer other than 200 OK: something else
// may hold the agent's port. QueryProvision wraps it with ErrInvalidStatus.
type AnswerError struct {
	// Status is the answer's status line after the version, "404 Not Found".
	Status string
}

func (e *AnswerError) Error() string { return msp.ProvisionPath + " answered " + e.Status }

// QueryOptions configures QueryProvision. The zero value asks the local
// agent once, without waking its key latch.
type QueryOptions struct {
	// Addr is the agent listener, host:port. Empty means msp.ProxyAddr.
	Addr string
	// Tick is the x-ms-azure-time_tick value. Empty means "0".
	Tick string
	// Notify sends x-ms-azure-notify, which wakes the key latch.
	Notify bool
	// Timeout bounds the query. Zero means DefaultQueryTimeout.
	Timeout time.Duration
	// Dial is as in WaitOptions.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// QueryProvision sends one GET /provision on a connection of its own and
// reads the answer. The connection is closed after it (Connection: close)
// rather than kept for a next poll: polls are DefaultPollInterval apart,
// and the agent being polled may be restarting between them. An answer
// that is not the agent's (not 200, not the state's JSON, too long) is an
// error matching ErrInvalidStatus; an address that cannot be written into
// a request matches ErrInvalidOptions; anything else is the connection's
// failure.
func QueryProvision(ctx context.Context, opts *QueryOptions) (ProvisionState, error) {
	var o QueryOptions
	if opts != nil {
		o = *opts
	}
	if o.Addr == "" {
		o.Addr = msp.ProxyAddr.String()
	}
	if o.Tick == "" {
		o.Tick = "0"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultQueryTimeout
	}
	if o.Dial == nil {
		o.Dial = (&net.Dialer{}).DialContext
	}
	addr := o.Addr
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	target := "http://" + addr + msp.ProvisionPath
	// addr becomes the Host line: a space or line break in it would let it
	// add header lines or break the request line.
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c >= 0x7f {
			return ProvisionState{}, fmt.Errorf("%w: agent address %q is not printable ASCII", ErrInvalidOptions, addr)
		}
	}
	conn, err := o.Dial(ctx, "tcp", addr)
	if err != nil {
		return ProvisionState{}, fmt.Errorf("GET %s: %w", target, err)
	}
	defer conn.Close()
	// The deadline bounds the whole exchange, so a listener that accepts
	// and never answers costs one query timeout; canceling ctx before then
	// unblocks it too.
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	hdr := []msp.HeaderField{
		{Name: "Host", Value: addr},
		{Name: HeaderMetadata, Value: "true"},
		{Name: http.CanonicalHeaderKey(HeaderTimeTick), Value: o.Tick},
	}
	if o.Notify {
		hdr = append(hdr, msp.HeaderField{Name: http.CanonicalHeaderKey(HeaderNotify), Value: "true"})
	}
	hdr = append(hdr, msp.HeaderField{Name: "Connection", Value: "close"})
	bw := bufio.NewWriter(conn)
	httpwire.WriteRequestHead(bw, http.MethodGet, msp.ProvisionPath, hdr)
	if err := bw.Flush(); err != nil {
		return ProvisionState{}, fmt.Errorf("GET %s: %w", target, err)
	}
	// 1xx interim answers are skipped, as an http.Client does.
	resp, err := httpwire.ReadResponse(bufio.NewReader(conn), http.MethodGet)
	if err != nil {
		return ProvisionState{}, fmt.Errorf("GET %s: %w", target, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProvisionBody+1))
	if err != nil {
		return ProvisionState{}, fmt.Errorf("GET %s: %w", target, err)
	}
	if resp.Code != http.StatusOK {
		return ProvisionState{}, fmt.Errorf("%w: %w", ErrInvalidStatus, &AnswerError{Status: resp.Status})
	}
	if len(body) > maxProvisionBody {
		return ProvisionState{}, fmt.Errorf("%w: /provision body is over %d bytes", ErrInvalidStatus, maxProvisionBody)
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
