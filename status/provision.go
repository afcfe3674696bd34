package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ReadyFlags records which parts of the agent are up.
type ReadyFlags uint8

// The provision flags of upstream, with their values.
const (
	RedirectorReady ReadyFlags = 1 // eBPF loaded and attached
	KeyLatchReady   ReadyFlags = 2 // key latched, or MSP disabled
	ListenerReady   ReadyFlags = 4 // listener bound
	AllReady                   = RedirectorReady | KeyLatchReady | ListenerReady
)

// String renders the flags for logs, such as "REDIRECTOR|LISTENER", or
// "NONE".
func (f ReadyFlags) String() string {
	var parts []string
	for _, n := range [...]struct {
		flag ReadyFlags
		name string
	}{{RedirectorReady, "REDIRECTOR"}, {KeyLatchReady, "KEY_LATCH"}, {ListenerReady, "LISTENER"}} {
		if f&n.flag != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "NONE"
	}
	return strings.Join(parts, "|")
}

// DefaultProvisionTimeout is how long after the key latch starts, or after
// the last reset, provisioning is declared finished even if not all flags
// are set.
const DefaultProvisionTimeout = 120 * time.Second

// Header names of the /provision query.
const (
	HeaderMetadata = "Metadata"
	HeaderTimeTick = "x-ms-azure-time-tick"
	HeaderNotify   = "x-ms-azure-notify"
)

// StateFileMode is the mode of provisioned.tag and status.tag.
const StateFileMode = 0o600

// ProvisionOptions configures a Provision.
type ProvisionOptions struct {
	// Registry supplies the module messages for the failure lines. Required.
	Registry *Registry
	// KeyDir is where provisioned.tag and status.tag go. Empty means no
	// files are written, which suits tests and dry runs only.
	KeyDir string
	// Timeout is the provisioning timeout. Zero means
	// DefaultProvisionTimeout.
	Timeout time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// OnFinished is called, outside any lock, each time provisioning
	// finishes: on every update that makes all flags ready, and when the
	// timeout fires. The agent uses it to reprogram the redirect policy and
	// start its background tasks once. It must not block for long.
	OnFinished func(ctx context.Context, r ProvisionResult)
	// Console, if set, receives one line per finish: "Provision finished
	// successfully" or the failure text (the serial console on Linux).
	Console io.Writer
	// Logger receives failed finishes and state file failures. Nil
	// discards them.
	Logger *slog.Logger
}

// ProvisionResult describes one finish.
type ProvisionResult struct {
	// Flags are the flags set at the finish.
	Flags ReadyFlags
	// ErrorMessage is empty on success, otherwise the failure lines.
	ErrorMessage string
	// TimedOut is true when the finish came from the timeout.
	TimedOut bool
}

// ProvisionState is what GET /provision answers.
type ProvisionState struct {
	// Finished tells the --status client to stop polling.
	Finished bool `json:"finished"`
	// ErrorMessage holds one "<module> - <message>\r\n" line per part that
	// is not ready; empty when all are.
	ErrorMessage string `json:"errorMessage"`
}

// Provision tracks the three ready flags, the provisioning timeout and the
// finish time, writes the state files and answers GET /provision. It is
// safe for concurrent use.
type Provision struct {
	opts   ProvisionOptions
	notify chan struct{}

	mu         sync.Mutex
	flags      ReadyFlags
	finished   int64 // unix nanoseconds of the last finish, 0 if none
	timerStart time.Time
	timerFired bool
	latched    bool
}

// NewProvision returns a Provision with no flag set and the timeout timer
// started now.
func NewProvision(o *ProvisionOptions) (*Provision, error) {
	var opts ProvisionOptions
	if o != nil {
		opts = *o
	}
	if opts.Registry == nil {
		return nil, fmt.Errorf("%w: ProvisionOptions.Registry is nil", ErrInvalidOptions)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultProvisionTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Provision{opts: opts, notify: make(chan struct{}, 1), timerStart: opts.Now()}, nil
}

// StartTimer restarts the timeout period. The key latch calls it when its
// loop starts, which is where upstream starts the 120 s.
func (p *Provision) StartTimer() {
	p.mu.Lock()
	p.timerStart, p.timerFired = p.opts.Now(), false
	p.mu.Unlock()
}

// Flags returns the flags set so far.
func (p *Provision) Flags() ReadyFlags {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flags
}

// FinishedTick returns the unix-nanosecond time of the last finish, or 0.
func (p *Provision) FinishedTick() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.finished
}

// SetLatched records whether the secure channel is latched (neither
// disabled nor unknown). A latched agent answers /provision as finished
// once it has finished at all, whatever the query time.
func (p *Provision) SetLatched(latched bool) {
	p.mu.Lock()
	p.latched = latched
	p.mu.Unlock()
}

// SetReady sets f. When that makes all flags ready, provisioning finishes
// (again): the finish time moves to now, the state files are written and
// OnFinished runs. The key latch calls SetReady(ctx, KeyLatchReady) again
// when woken in a latched state, which refreshes the finish time. The error, wrapping ErrWriteStateFile, only reports the
// state files; the flag is set regardless.
func (p *Provision) SetReady(ctx context.Context, f ReadyFlags) error {
	p.mu.Lock()
	p.flags |= f & AllReady
	all := p.flags == AllReady
	p.mu.Unlock()
	if !all {
		return nil
	}
	return p.finish(ctx, false)
}

// ResetKeyLatch clears KeyLatchReady and the finish time and restarts the
// timeout period. The key latch calls it when woken by /provision while
// the channel is disabled or unknown, before polling afresh.
func (p *Provision) ResetKeyLatch() {
	p.mu.Lock()
	p.flags &^= KeyLatchReady
	p.finished = 0
	p.timerStart, p.timerFired = p.opts.Now(), false
	p.mu.Unlock()
}

// CheckTimeout finishes provisioning with the failure message when the
// timeout has passed without all flags ready. It acts once per timer
// period and reports whether it did.
func (p *Provision) CheckTimeout(ctx context.Context) (bool, error) {
	p.mu.Lock()
	due := !p.timerFired && p.flags != AllReady && p.opts.Now().Sub(p.timerStart) >= p.opts.Timeout
	if due {
		p.timerFired = true
	}
	p.mu.Unlock()
	if !due {
		return false, nil
	}
	return true, p.finish(ctx, true)
}

// Run calls CheckTimeout every second until ctx is done. State file errors
// are logged, not returned: provisioning must not stop the agent.
func (p *Provision) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if _, err := p.CheckTimeout(ctx); err != nil {
				p.opts.Logger.Error("provision timeout: writing state files failed", "error", err)
			}
		}
	}
}

func (p *Provision) finish(ctx context.Context, timedOut bool) error {
	now := p.opts.Now()
	p.mu.Lock()
	p.finished = now.UnixNano()
	flags := p.flags
	p.mu.Unlock()

	res := ProvisionResult{Flags: flags, ErrorMessage: p.failureText(flags), TimedOut: timedOut}
	if res.ErrorMessage != "" {
		// Upstream sends this as an Error event; the log is our equivalent.
		p.opts.Logger.Error("provisioning finished with errors", "timedOut", timedOut, "errors", res.ErrorMessage)
	}
	err := p.writeStateFiles(now, res.ErrorMessage)
	if err != nil {
		p.opts.Logger.Error("writing provisioning state files failed", "error", err)
	}
	if p.opts.Console != nil {
		line := res.ErrorMessage
		if line == "" {
			line = "Provision finished successfully\r\n"
		}
		_, _ = io.WriteString(p.opts.Console, line)
	}
	if p.opts.OnFinished != nil {
		p.opts.OnFinished(ctx, res)
	}
	return err
}

// ErrorMessage returns the failure lines for the flags missing now: one
// "<module> - <message>\r\n" line per missing flag, or "" when all are set.
func (p *Provision) ErrorMessage() string { return p.failureText(p.Flags()) }

func (p *Provision) failureText(flags ReadyFlags) string {
	var b strings.Builder
	for _, f := range [...]struct {
		flag ReadyFlags
		mod  Module
	}{{RedirectorReady, ModuleRedirector}, {KeyLatchReady, ModuleKeyLatch}, {ListenerReady, ModuleListener}} {
		if flags&f.flag == 0 {
			b.WriteString(f.mod.FieldName())
			b.WriteString(" - ")
			b.WriteString(p.opts.Registry.Module(f.mod).Message)
			b.WriteString("\r\n")
		}
	}
	return b.String()
}

func (p *Provision) writeStateFiles(now time.Time, failure string) error {
	if p.opts.KeyDir == "" {
		return nil
	}
	if err := os.MkdirAll(p.opts.KeyDir, 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrWriteStateFile, err)
	}
	stamp := now.UTC().AppendFormat(nil, TimestampLayout)
	if err := writeFileAtomic(filepath.Join(p.opts.KeyDir, ProvisionedTagFile), stamp, StateFileMode); err != nil {
		return fmt.Errorf("%w: %w", ErrWriteStateFile, err)
	}
	if err := writeFileAtomic(filepath.Join(p.opts.KeyDir, StatusTagFile), []byte(xmlEscape(failure)), StateFileMode); err != nil {
		return fmt.Errorf("%w: %w", ErrWriteStateFile, err)
	}
	return nil
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "'", "&apos;", `"`, "&quot;", "<", "&lt;", ">", "&gt;")

func xmlEscape(s string) string { return xmlEscaper.Replace(s) }

// Query answers a /provision query made at queryTick (unix nanoseconds).
// It is finished when provisioning finished at or after the query, or when
// the channel is latched and provisioning finished at all. When notify is
// set and the answer is not finished, the key latch is woken through
// Notify.
func (p *Provision) Query(queryTick int64, notify bool) ProvisionState {
	p.mu.Lock()
	finished := p.finished >= queryTick || (p.latched && p.finished > 0)
	flags := p.flags
	p.mu.Unlock()
	if notify && !finished {
		select {
		case p.notify <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	return ProvisionState{Finished: finished, ErrorMessage: p.failureText(flags)}
}

// Notify returns the channel the key latch selects on next to its poll
// timer. A value means a --status client asked and provisioning was not
// finished: poll at once. Wake-ups are coalesced.
func (p *Provision) Notify() <-chan struct{} { return p.notify }

// ServeHTTP answers GET /provision. A request without a Metadata header
// gets 400 and the connection is closed. A missing or unparseable
// x-ms-azure-time-tick counts as 0, as upstream does, so such a query is
// always finished; its errorMessage still tells what is missing.
func (p *Provision) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header[http.CanonicalHeaderKey(HeaderMetadata)]; !ok {
		w.Header().Set("Connection", "close")
		http.Error(w, "Metadata header is required", http.StatusBadRequest)
		return
	}
	_, notify := r.Header[http.CanonicalHeaderKey(HeaderNotify)]
	st := p.Query(parseTimeTick(r.Header.Get(HeaderTimeTick)), notify)
	body, err := json.Marshal(st)
	if err != nil { // cannot happen for two plain fields
		http.Error(w, "encoding provision state", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// parseTimeTick parses the i128 tick of upstream into int64 nanoseconds.
// Values beyond int64 saturate, so an absurd future tick reads as "not
// finished" rather than wrapping around into "finished".
func parseTimeTick(s string) int64 {
	s = strings.TrimSpace(s)
	v, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return v
	}
	if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		if strings.HasPrefix(s, "-") {
			return math.MinInt64
		}
		return math.MaxInt64
	}
	return 0
}

// AggregateStatusHandler returns the handler of GET /gpa-aggregated-status:
// the registry's current status as compact JSON.
func AggregateStatusHandler(reg *Registry, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body, err := reg.Snapshot(now()).MarshalCompact()
		if err != nil {
			http.Error(w, "encoding status", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
}
