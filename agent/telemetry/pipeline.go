package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// Upstream's bounds and intervals.
const (
	// QueueCapacity bounds the in-memory event queue and the send queue
	// each.
	QueueCapacity = 1000
	// DefaultMaxEventFiles is upstream's maxEventFileCount default.
	DefaultMaxEventFiles = 30
	// DefaultFlushInterval is how often queued events move on (event_logger).
	DefaultFlushInterval = 60 * time.Second
	// DefaultReadInterval is how often event files are read back
	// (event_reader), after a first read one minute after Run starts.
	DefaultReadInterval = 300 * time.Second
	// DefaultRetryDelay separates the tries of one batch.
	DefaultRetryDelay = 15 * time.Second
	// SendTries is how often a batch is tried before it is dropped.
	SendTries = 5
	// maxEventFileBytes bounds an event file read back: the largest file
	// the pipeline writes is QueueCapacity events of MaxMessageLength.
	maxEventFileBytes = 8 << 20
)

// Sender posts one TelemetryData document to WireServer, signed with
// signer when it is not nil. *keylatch.Client is one.
type Sender interface {
	SendTelemetry(ctx context.Context, xml []byte, signer *msp.Signer) error
}

// Options configure New. Sender is required.
type Options struct {
	// Dir is the event folder (upstream's eventFolder) where events that
	// cannot be queued for sending wait; empty drops them instead.
	Dir string
	// MaxEventFiles bounds the event files in Dir (maxEventFileCount);
	// DefaultMaxEventFiles when zero.
	MaxEventFiles int
	// Sender posts the batches.
	Sender Sender
	// Signer returns the latched key's signer, nil when there is none.
	// Nil sends unsigned, as upstream does.
	Signer func() *msp.Signer
	// VMData returns the parameters of the next batches; LocalVMData when
	// nil. Called once per send round.
	VMData func(ctx context.Context) VMData
	// FlushInterval, ReadInterval and RetryDelay default to upstream's 60
	// s, 300 s and 15 s. Tests shorten them.
	FlushInterval, ReadInterval, RetryDelay time.Duration
	// Logger receives the pipeline's own diagnostics; nil discards. It
	// must not feed this pipeline.
	Logger *slog.Logger
	// Now is the clock for file names; time.Now when nil.
	Now func() time.Time
}

// Stats count events by fate since New.
type Stats struct {
	// Sent events reached the host in a batch it accepted.
	Sent uint64
	// Dropped events were lost to a bound: a full queue, the file cap, a
	// batch refused SendTries times, an unreadable file.
	Dropped uint64
	// Spilled events were written to the event folder.
	Spilled uint64
}

// Pipeline moves events from Write to the host. Write is safe for
// concurrent use; Run is called once.
type Pipeline struct {
	o      Options
	mem    chan Event
	send   chan Event
	notify chan struct{}

	sent, dropped, spilled atomic.Uint64
}

// ErrNoSender is returned by New without Options.Sender.
var ErrNoSender = errors.New("telemetry: Options.Sender is required")

// New returns a pipeline that does not run yet.
func New(opts *Options) (*Pipeline, error) {
	if opts == nil || opts.Sender == nil {
		return nil, ErrNoSender
	}
	o := *opts
	if o.MaxEventFiles <= 0 {
		o.MaxEventFiles = DefaultMaxEventFiles
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.ReadInterval <= 0 {
		o.ReadInterval = DefaultReadInterval
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.Signer == nil {
		o.Signer = func() *msp.Signer { return nil }
	}
	if o.VMData == nil {
		vm := LocalVMData()
		o.VMData = func(context.Context) VMData { return vm }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Pipeline{o: o, mem: make(chan Event, QueueCapacity), send: make(chan Event, QueueCapacity), notify: make(chan struct{}, 1)}, nil
}

// Write queues e and reports whether it fit; it never blocks. A full
// queue drops e, as upstream's bounded queue does.
func (p *Pipeline) Write(e Event) bool {
	e.Message = truncate(e.Message, MaxMessageLength)
	select {
	case p.mem <- e:
		return true
	default:
		p.dropped.Add(1)
		return false
	}
}

// Stats returns the counters.
func (p *Pipeline) Stats() Stats {
	return Stats{Sent: p.sent.Load(), Dropped: p.dropped.Load(), Spilled: p.spilled.Load()}
}

// Run runs the three stages until ctx ends, then writes what is still
// queued to the event folder (within its cap) so a restart sends it.
func (p *Pipeline) Run(ctx context.Context) error {
	if p.o.Dir != "" {
		if err := os.MkdirAll(p.o.Dir, 0o700); err != nil {
			p.o.Logger.Warn("cannot create the event folder", "dir", p.o.Dir, "err", err)
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); p.sender(ctx) }()
	flush := time.NewTicker(p.o.FlushInterval)
	defer flush.Stop()
	// Upstream reads the folder a minute after starting, then every five.
	read := time.NewTimer(min(time.Minute, p.o.ReadInterval))
	defer read.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			p.shutdown()
			return ctx.Err()
		case <-flush.C:
			p.flush()
		case <-read.C:
			p.readFiles()
			read.Reset(p.o.ReadInterval)
		}
	}
}

func (p *Pipeline) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// drain takes every event queued in c now.
func drain(c chan Event) []Event {
	var out []Event
	for {
		select {
		case e := <-c:
			out = append(out, e)
		default:
			return out
		}
	}
}

// flush moves the in-memory events to the send queue; what does not fit
// goes to one event file.
func (p *Pipeline) flush() {
	events := drain(p.mem)
	if len(events) == 0 {
		return
	}
	i := 0
	for ; i < len(events); i++ {
		select {
		case p.send <- events[i]:
			continue
		default:
		}
		break
	}
	if i > 0 {
		p.wake()
	}
	p.spill(events[i:])
}

// spill writes events to a new event file, or drops them when there is no
// folder or it already holds MaxEventFiles files.
func (p *Pipeline) spill(events []Event) {
	if len(events) == 0 {
		return
	}
	if p.o.Dir == "" {
		p.dropped.Add(uint64(len(events)))
		return
	}
	files, err := p.eventFiles()
	if err != nil {
		p.o.Logger.Warn("cannot list event files", "err", err)
	}
	if len(files) >= p.o.MaxEventFiles {
		p.o.Logger.Warn(fmt.Sprintf("Event files exceed the max file count %d, drop and skip the write to disk.", p.o.MaxEventFiles), "dropped", len(events))
		p.dropped.Add(uint64(len(events)))
		return
	}
	if err := p.writeFile(events); err != nil {
		p.o.Logger.Warn("cannot write an event file", "err", err)
		p.dropped.Add(uint64(len(events)))
		return
	}
	p.spilled.Add(uint64(len(events)))
}

func (p *Pipeline) writeFile(events []Event) error {
	data, err := json.Marshal(events)
	if err != nil {
		return err
	}
	// Written under a name the reader ignores, then renamed, so a reader
	// never sees half a file.
	name := EventFileName(p.o.Now())
	tmp := filepath.Join(p.o.Dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(p.o.Dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// eventFiles lists the event files, oldest (smallest number) first.
func (p *Pipeline) eventFiles() ([]string, error) {
	ents, err := os.ReadDir(p.o.Dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && IsEventFile(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := len(a) - len(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return names, nil
}

// readFiles queues the events of the event files and deletes each file
// once queued. Unlike upstream, which drops what does not fit, a file
// whose events do not all fit in the send queue stays for the next round.
func (p *Pipeline) readFiles() {
	if p.o.Dir == "" {
		return
	}
	files, err := p.eventFiles()
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			p.o.Logger.Warn("cannot list event files", "err", err)
		}
		return
	}
	queued := 0
	defer func() {
		if queued > 0 {
			p.wake()
		}
	}()
	for _, name := range files {
		path := filepath.Join(p.o.Dir, name)
		events, err := readEventFile(path)
		if err != nil {
			p.o.Logger.Warn("dropping an unreadable event file", "file", path, "err", err)
			p.dropped.Add(1)
			os.Remove(path)
			continue
		}
		if cap(p.send)-len(p.send) < len(events) {
			return
		}
		for _, e := range events {
			select {
			case p.send <- e:
			default: // only at shutdown, when the sender puts one back
				p.dropped.Add(1)
			}
		}
		queued += len(events)
		if err := os.Remove(path); err != nil {
			p.o.Logger.Warn("cannot remove an event file", "file", path, "err", err)
		}
	}
}

func readEventFile(path string) ([]Event, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxEventFileBytes {
		return nil, fmt.Errorf("%d bytes, over %d", fi.Size(), maxEventFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var events []Event
	if err := json.Unmarshal(data, &events); err != nil {
		return nil, err
	}
	if len(events) > QueueCapacity {
		return nil, fmt.Errorf("%d events, over %d", len(events), QueueCapacity)
	}
	return events, nil
}

// sender posts the send queue in batches each time it is woken.
func (p *Pipeline) sender(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.notify:
		}
		if len(p.send) == 0 {
			continue
		}
		vm := p.o.VMData(ctx)
		var held *Event // the event that did not fit the previous batch
		for ctx.Err() == nil {
			b := NewBatch(vm)
			if held != nil {
				if !b.Add(held) {
					p.o.Logger.Warn("Event data too large. Not sending to wire-server.", "bytes", len(held.Message))
					p.dropped.Add(1)
				}
				held = nil
			}
		fill:
			for {
				select {
				case e := <-p.send:
					if !b.Add(&e) {
						if b.Len() == 0 {
							p.o.Logger.Warn("Event data too large. Not sending to wire-server.", "bytes", len(e.Message))
							p.dropped.Add(1)
							continue
						}
						held = &e
						break fill
					}
				default:
					break fill
				}
			}
			if b.Len() == 0 {
				break
			}
			p.post(ctx, b)
		}
		if held != nil {
			// Cancelled while holding one: it goes back for shutdown.
			select {
			case p.send <- *held:
			default:
				p.dropped.Add(1)
			}
		}
	}
}

// post sends one batch, SendTries times at most, RetryDelay apart.
func (p *Pipeline) post(ctx context.Context, b *Batch) {
	body := b.XML()
	for try := range SendTries {
		err := p.o.Sender.SendTelemetry(ctx, body, p.o.Signer())
		if err == nil {
			p.sent.Add(uint64(b.Len()))
			return
		}
		p.o.Logger.Warn(fmt.Sprintf("[Retry %d] Failed to send telemetry data to host with error: %v", try, err))
		if try == SendTries-1 {
			break
		}
		t := time.NewTimer(p.o.RetryDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			p.o.Logger.Warn("telemetry batch not sent: shutting down", "events", b.Len())
			p.dropped.Add(uint64(b.Len()))
			return
		case <-t.C:
		}
	}
	p.dropped.Add(uint64(b.Len()))
}

// shutdown writes what is still queued to the event folder.
func (p *Pipeline) shutdown() {
	left := append(drain(p.send), drain(p.mem)...)
	for len(left) > 0 {
		n := min(len(left), QueueCapacity)
		p.spill(left[:n])
		left = left[n:]
	}
}

// String describes the pipeline for logs.
func (p *Pipeline) String() string {
	return "telemetry(dir=" + p.o.Dir + ", maxEventFiles=" + strconv.Itoa(p.o.MaxEventFiles) + ")"
}
