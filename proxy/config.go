package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

// Defaults of Config. The body limits and the listen address are
// upstream's; the others are hardening upstream lacks.
const (
	DefaultMaxHeaderBytes      = 32 << 10
	DefaultMaxURIBytes         = 8 << 10
	DefaultMaxHeaders          = 100
	DefaultMaxBodyBytes        = 100 << 10
	DefaultMaxSkipSigBodyBytes = 100 << 20
	DefaultMaxConns            = 512
	DefaultMaxConnsWait        = 250 * time.Millisecond
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultIdleTimeout         = 60 * time.Second
	DefaultBodyReadTimeout     = 10 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultDialTimeout         = 5 * time.Second
	DefaultResponseTimeout     = 30 * time.Second
	DefaultMaxIdlePerEndpoint  = 128
	DefaultUpstreamIdleTimeout = 30 * time.Second
	DefaultRefreshTimeout      = 3 * time.Second
	DefaultStartupWait         = 5 * time.Second
)

// Config configures a Server. Resolver and Latch are required; every other
// zero field takes its default.
type Config struct {
	// Addr is where ListenAndServe listens; msp.ProxyAddr when empty. Serve
	// uses the listener it is given instead.
	Addr string

	// Resolver identifies the process behind each client connection.
	Resolver CallerResolver
	// Latch is where the latched state comes from; a *keylatch.Latcher in
	// the agent. Each request reads exactly one snapshot (Latch.Current),
	// which decides, dates and signs it; a nil snapshot means nothing is
	// latched: no rules, no key.
	//
	// A request that arrives while the state is still Unknown waits up to
	// StartupWait for Latch.WaitKnown: after a restart with pinned programs
	// the redirect is live before the first status poll, and without the
	// wait those requests would go out unsigned. After StartupWait the
	// request proceeds as upstream would on first boot, unsigned. Whatever
	// the snapshot, a request to an endpoint it has in Enforce is never
	// sent without a signature: with no key it gets 503 and Retry-After. A
	// restarted latch publishes the state it kept on disk
	// (keylatch.Snapshot.Restored) before its first poll, so such a request
	// is signed at once.
	//
	// When the host answers 401 to a request signed with a snapshot's key
	// (the first sign of a key reset at the host), the proxy waits up to
	// RefreshTimeout for Latch.WaitNewKey to offer a snapshot with another
	// key, then decides, dates and signs the request again under it and
	// retries once, so the reset costs the client no failed request.
	Latch       Latch
	StartupWait time.Duration
	// RefreshTimeout bounds the wait for Latch.WaitNewKey; 3 s when zero.
	RefreshTimeout time.Duration
	// Dial opens upstream connections; a net.Dialer when nil. Tests map the
	// metadata addresses to loopback servers here.
	Dial DialFunc
	// Now is the clock for x-ms-azure-host-date, so the key latch can supply
	// host-synchronised time; time.Now when nil.
	Now func() time.Time

	// Provision serves GET /provision (docs/protocol.md §7.3). The proxy checks
	// the Metadata header first and answers 400 without it; nil answers 503.
	Provision http.Handler
	// AggregateStatus returns the compact status.json served at
	// /gpa-aggregated-status to elevated callers; nil answers 503.
	AggregateStatus func(ctx context.Context) ([]byte, error)

	// AuditLog receives one JSON line per request, written in one Write
	// call; typically a *RotatingFile. Nil disables it.
	AuditLog io.Writer
	// Summaries receives every audit record, for status.json; nil disables.
	Summaries SummarySink
	// Metrics receives the proxy's measurements; nil records none.
	Metrics Metrics
	// Logger is for operational messages; slog.Default() when nil.
	Logger *slog.Logger

	// Limits on what a client may send.
	MaxHeaderBytes      int   // request line excluded; 431 beyond
	MaxURIBytes         int   // 414 beyond
	MaxHeaders          int   // header lines; 431 beyond
	MaxBodyBytes        int64 // signed requests; 413 beyond
	MaxSkipSigBodyBytes int64 // skip-sig requests from root; 413 beyond
	MaxConns            int   // concurrent client connections; 503 beyond
	// MaxConnsWait is how long a connection over MaxConns waits for a slot
	// before it gets its 503, counted from the start of the overload: a
	// burst of short connections is served from the kernel's backlog, and
	// an overload that lasts (slots held by slow or idle clients) is
	// refused at once after that first wait. Negative: refuse at once.
	MaxConnsWait time.Duration

	// Client-side timeouts. ReadHeaderTimeout bounds reading a request head
	// (slowloris); IdleTimeout bounds the wait for the next request on a
	// keep-alive connection; BodyReadTimeout and WriteTimeout bound each
	// read of a request body and each write of a response.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	BodyReadTimeout   time.Duration
	WriteTimeout      time.Duration

	// Upstream: DialTimeout bounds connecting to a host endpoint (502 when
	// exceeded); ResponseTimeout bounds every wait for bytes from it (504
	// when no response head arrives in time). MaxIdlePerEndpoint and
	// UpstreamIdleTimeout size the keep-alive pool.
	DialTimeout         time.Duration
	ResponseTimeout     time.Duration
	MaxIdlePerEndpoint  int
	UpstreamIdleTimeout time.Duration
}

// ErrConfig wraps every error New returns for an unusable Config.
var ErrConfig = errors.New("proxy: invalid config")

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Resolver == nil {
		return out, errors.Join(ErrConfig, errors.New("a CallerResolver is required"))
	}
	if out.Latch == nil {
		return out, errors.Join(ErrConfig, errors.New("a Latch is required"))
	}
	setDefault(&out.Addr, msp.ProxyAddr.String())
	setDefault(&out.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&out.MaxURIBytes, DefaultMaxURIBytes)
	setDefault(&out.MaxHeaders, DefaultMaxHeaders)
	setDefault(&out.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&out.MaxSkipSigBodyBytes, DefaultMaxSkipSigBodyBytes)
	setDefault(&out.MaxConns, DefaultMaxConns)
	setDefault(&out.MaxConnsWait, DefaultMaxConnsWait)
	setDefault(&out.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&out.IdleTimeout, DefaultIdleTimeout)
	setDefault(&out.BodyReadTimeout, DefaultBodyReadTimeout)
	setDefault(&out.WriteTimeout, DefaultWriteTimeout)
	setDefault(&out.DialTimeout, DefaultDialTimeout)
	setDefault(&out.ResponseTimeout, DefaultResponseTimeout)
	setDefault(&out.MaxIdlePerEndpoint, DefaultMaxIdlePerEndpoint)
	setDefault(&out.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
	setDefault(&out.RefreshTimeout, DefaultRefreshTimeout)
	setDefault(&out.StartupWait, DefaultStartupWait)
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.Metrics == nil {
		out.Metrics = noMetrics{}
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Dial == nil {
		var d net.Dialer
		out.Dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	return out, nil
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Latch is the proxy's source of latched state. *keylatch.Latcher
// implements it.
type Latch interface {
	// Current returns the current snapshot; nil when nothing is latched.
	Current() *keylatch.Snapshot
	// WaitKnown returns the first snapshot whose state is not Unknown, or
	// nil when ctx ends first.
	WaitKnown(ctx context.Context) *keylatch.Snapshot
	// WaitNewKey returns a snapshot whose key differs from stale's once
	// there is one, or nil when ctx ends first.
	WaitNewKey(ctx context.Context, stale *keylatch.Snapshot) *keylatch.Snapshot
}

// SnapshotFunc is a Latch whose state is what the function returns: it
// never waits for a known state and never offers a newer key. It suits
// tests and embedders with a fixed key.
type SnapshotFunc func() *keylatch.Snapshot

// Current implements Latch.
func (f SnapshotFunc) Current() *keylatch.Snapshot { return f() }

// WaitKnown implements Latch: the current snapshot, at once.
func (f SnapshotFunc) WaitKnown(context.Context) *keylatch.Snapshot { return f() }

// WaitNewKey implements Latch: never a newer key.
func (f SnapshotFunc) WaitNewKey(context.Context, *keylatch.Snapshot) *keylatch.Snapshot { return nil }
