package status

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of WriterOptions.
const (
	DefaultWriteInterval = 60 * time.Second
	DefaultMinSpacing    = time.Second
)

// StatusFileMode is the mode status.json is written with.
const StatusFileMode = 0o640

// WriterOptions configures a Writer.
type WriterOptions struct {
	// Path is the status.json file. Empty means DefaultStatusPath().
	Path string
	// Interval is the time between periodic writes. Zero means
	// DefaultWriteInterval, the fixed 60 s of upstream.
	Interval time.Duration
	// MinSpacing is the shortest time between two writes caused by
	// changes, so a module that flaps cannot turn the writer into a disk
	// loop. Zero means DefaultMinSpacing; negative means no spacing.
	MinSpacing time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Logger receives write failures. Nil discards them.
	Logger *slog.Logger
}

// Writer writes a Registry's status to status.json: at start, every
// Interval, and soon after every change a component reports.
type Writer struct {
	reg  *Registry
	opts WriterOptions
}

// NewWriter returns a writer for reg.
func NewWriter(reg *Registry, o *WriterOptions) (*Writer, error) {
	var opts WriterOptions
	if o != nil {
		opts = *o
	}
	if reg == nil {
		return nil, fmt.Errorf("%w: nil registry", ErrInvalidOptions)
	}
	if opts.Path == "" {
		opts.Path = DefaultStatusPath()
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultWriteInterval
	}
	if opts.MinSpacing == 0 {
		opts.MinSpacing = DefaultMinSpacing
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{reg: reg, opts: opts}, nil
}

// Path returns the file the writer writes.
func (w *Writer) Path() string { return w.opts.Path }

// WriteOnce writes the current status once. The result is also recorded
// as the monitorStatus message, which the next write publishes: a failure
// shows up in status.json (or /gpa-aggregated-status) instead of stopping
// the agent. The returned error wraps ErrWriteStatus.
func (w *Writer) WriteOnce() error {
	snap := w.reg.Snapshot(w.opts.Now())
	data, err := snap.MarshalIndent()
	if err == nil {
		err = writeFileAtomic(w.opts.Path, data, StatusFileMode)
	}
	if err != nil {
		w.reg.SetMessage(ModuleMonitor, "Error writing aggregate status to status file: "+pathError(err))
		w.opts.Logger.Warn("writing status file failed", "path", w.opts.Path, "error", err)
		return fmt.Errorf("%w: %s: %w", ErrWriteStatus, w.opts.Path, err)
	}
	w.reg.SetMessage(ModuleMonitor, "Aggregate status written to status file: "+w.opts.Path)
	return nil
}

// Run writes until ctx is done, then writes a last time so the file shows
// the final state. Write failures never end it; it returns ctx's error.
func (w *Writer) Run(ctx context.Context) error {
	_ = w.WriteOnce()
	last := w.opts.Now()
	tick := time.NewTicker(w.opts.Interval)
	defer tick.Stop()
	var spacing *time.Timer // pending change-driven write, if any
	var spacingC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if spacing != nil {
				spacing.Stop()
			}
			_ = w.WriteOnce()
			return ctx.Err()
		case <-tick.C:
		case <-w.reg.Changed():
			if spacing != nil {
				continue // a write is already scheduled and will see this change
			}
			if wait := w.opts.MinSpacing - w.opts.Now().Sub(last); wait > 0 {
				spacing = time.NewTimer(wait)
				spacingC = spacing.C
				continue
			}
		case <-spacingC:
			spacing, spacingC = nil, nil
		}
		_ = w.WriteOnce()
		last = w.opts.Now()
	}
}
