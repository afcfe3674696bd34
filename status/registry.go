package status

import (
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/metadatasec/gpa/msp"
)

// Module names one component that reports into a Registry.
type Module uint8

// The modules of status.json.
const (
	ModuleKeyLatch   Module = iota // keyLatchStatus
	ModuleRedirector               // ebpfProgramStatus
	ModuleListener                 // proxyListenerStatus
	ModuleTelemetry                // telemetryLoggerStatus
	ModuleMonitor                  // monitorStatus, owned by the Writer
	numModules
)

// FieldName returns the module's JSON field in proxyAgentStatus, which is
// also the prefix of its line in status.tag and the /provision errorMessage.
func (m Module) FieldName() string {
	switch m {
	case ModuleKeyLatch:
		return "keyLatchStatus"
	case ModuleRedirector:
		return "ebpfProgramStatus"
	case ModuleListener:
		return "proxyListenerStatus"
	case ModuleTelemetry:
		return "telemetryLoggerStatus"
	case ModuleMonitor:
		return "monitorStatus"
	}
	return "unknownModule"
}

// String returns FieldName.
func (m Module) String() string { return m.FieldName() }

// Messages the registry and the writer produce themselves.
const (
	// MessageUnknown is the message of a module that never reported one.
	MessageUnknown = "Status unknown."
	// MessageMonitorStarted is monitorStatus before the first write.
	MessageMonitorStarted = "Proxy agent status is running."
)

// MaxMessageChars is how many characters of a module message are kept; a
// longer message is cut there and "..." is appended.
const MaxMessageChars = 1024

// RegistryOptions configures a Registry. The zero value works.
type RegistryOptions struct {
	// Version is reported as proxyAgentStatus.version.
	Version string
	// Logger receives one record per module state or message change. Nil
	// discards them.
	Logger *slog.Logger
	// Summary configures both connection-summary aggregators.
	Summary SummaryOptions
}

// Registry is the in-memory status every component reports to. All methods
// are safe for concurrent use. The calls made per request (CountRequest and
// the aggregators' Record) take no lock shared with the module setters, so
// a slow status write never holds up the proxy.
type Registry struct {
	version string
	logger  *slog.Logger

	mu      sync.Mutex // guards modules
	modules [numModules]ModuleStatus

	requests  atomic.Uint64
	changed   chan struct{}
	conns     *SummaryAggregator
	failedAut *SummaryAggregator
}

// NewRegistry returns a registry in the starting state: every module
// UNKNOWN with MessageUnknown, monitorStatus RUNNING, the secure channel
// "Unknown".
func NewRegistry(o *RegistryOptions) *Registry {
	var opts RegistryOptions
	if o != nil {
		opts = *o
	}
	r := &Registry{
		version:   opts.Version,
		logger:    opts.Logger,
		changed:   make(chan struct{}, 1),
		conns:     NewSummaryAggregator(&opts.Summary),
		failedAut: NewSummaryAggregator(&opts.Summary),
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	for i := range r.modules {
		r.modules[i] = ModuleStatus{Status: msp.ModuleUnknown, Message: MessageUnknown}
	}
	// The monitor is running as long as the process is: upstream never
	// reports it otherwise.
	r.modules[ModuleMonitor] = ModuleStatus{Status: msp.ModuleRunning, Message: MessageMonitorStarted}
	r.modules[ModuleKeyLatch].States = KeyLatchStates{}.Map()
	return r
}

// Set sets a module's state and message together.
func (r *Registry) Set(m Module, s msp.ModuleState, message string) {
	r.update(m, func(ms *ModuleStatus) { ms.Status, ms.Message = s, truncateMessage(message) })
}

// SetState sets a module's state and keeps its message.
func (r *Registry) SetState(m Module, s msp.ModuleState) {
	r.update(m, func(ms *ModuleStatus) { ms.Status = s })
}

// SetMessage sets a module's message and keeps its state. Messages longer
// than MaxMessageChars characters are truncated.
func (r *Registry) SetMessage(m Module, message string) {
	r.update(m, func(ms *ModuleStatus) { ms.Message = truncateMessage(message) })
}

// SetKeyLatchStates replaces keyLatchStatus.states.
func (r *Registry) SetKeyLatchStates(k KeyLatchStates) {
	states := k.Map()
	r.update(ModuleKeyLatch, func(ms *ModuleStatus) { ms.States = states })
}

func (r *Registry) update(m Module, f func(*ModuleStatus)) {
	if m >= numModules {
		return
	}
	r.mu.Lock()
	old := r.modules[m]
	next := old
	f(&next)
	r.modules[m] = next
	r.mu.Unlock()

	if next.Status == old.Status && next.Message == old.Message && maps.Equal(next.States, old.States) {
		return
	}
	r.logger.Info("module status changed", "module", m.FieldName(), "status", string(next.Status), "message", next.Message)
	// The monitor's own message changes after every write; signalling it
	// would make the writer write forever.
	if m != ModuleMonitor {
		select {
		case r.changed <- struct{}{}:
		default: // a signal is already pending; one write covers both
		}
	}
}

// Changed returns a channel that receives a value after module state,
// message or key-latch states changed. Signals are coalesced: several
// changes before a receive yield one value. The Writer consumes it; a
// Registry has one consumer.
func (r *Registry) Changed() <-chan struct{} { return r.changed }

// Module returns a copy of one module's status.
func (r *Registry) Module(m Module) ModuleStatus {
	if m >= numModules {
		return ModuleStatus{Status: msp.ModuleUnknown, Message: MessageUnknown}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return cloneModule(r.modules[m])
}

// CountRequest adds one to proxyConnectionsCount. The proxy calls it for
// every HTTP request, including the ones it answers itself.
func (r *Registry) CountRequest() { r.requests.Add(1) }

// Connections aggregates proxyConnectionSummary.
func (r *Registry) Connections() *SummaryAggregator { return r.conns }

// FailedAuthentications aggregates failedAuthenticateSummary.
func (r *Registry) FailedAuthentications() *SummaryAggregator { return r.failedAut }

// Snapshot returns the aggregate status as of now. The result shares no
// memory with the registry.
func (r *Registry) Snapshot(now time.Time) *AggregateStatus {
	r.mu.Lock()
	a := AgentStatus{
		Version:               r.version,
		MonitorStatus:         cloneModule(r.modules[ModuleMonitor]),
		KeyLatchStatus:        cloneModule(r.modules[ModuleKeyLatch]),
		EBPFProgramStatus:     cloneModule(r.modules[ModuleRedirector]),
		ProxyListenerStatus:   cloneModule(r.modules[ModuleListener]),
		TelemetryLoggerStatus: cloneModule(r.modules[ModuleTelemetry]),
	}
	r.mu.Unlock()
	a.ProxyConnectionsCount = r.requests.Load()
	a.Status = a.Overall()
	return &AggregateStatus{
		Timestamp:                 Timestamp{now.UTC().Truncate(time.Millisecond)},
		ProxyAgentStatus:          a,
		ProxyConnectionSummary:    r.conns.Snapshot(now),
		FailedAuthenticateSummary: r.failedAut.Snapshot(now),
	}
}

func cloneModule(m ModuleStatus) ModuleStatus {
	m.States = maps.Clone(m.States)
	return m
}

// truncateMessage keeps the first MaxMessageChars characters of s. It cuts
// on a rune boundary so the result stays valid UTF-8 in the JSON file.
func truncateMessage(s string) string {
	if len(s) <= MaxMessageChars || utf8.RuneCountInString(s) <= MaxMessageChars {
		return s
	}
	n := 0
	for i := range s {
		if n == MaxMessageChars {
			return s[:i] + "..."
		}
		n++
	}
	return s
}
