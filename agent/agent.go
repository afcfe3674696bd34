package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/agent/logfile"
	"github.com/metadatasec/gpa/agent/metrics"
	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/proxy"
	"github.com/metadatasec/gpa/status"
	"github.com/prometheus/client_golang/prometheus"
)

// Log rotation of both log files, upstream's limits.
const (
	logMaxBytes = 10 << 20
	logMaxFiles = 5
	// connectionLogFlush bounds how stale ProxyAgent.Connection.log may be.
	connectionLogFlush = 100 * time.Millisecond
)

// Options are the hooks of an Agent, in the manner of
// httputil.ReverseProxy's function fields. The zero value (or nil) runs the
// agent as the service does.
type Options struct {
	// Logger receives the agent's log records besides ProxyAgent.log;
	// slog.Default() when nil. Config.LogLevel filters both.
	Logger *slog.Logger
	// AuditLog receives a copy of every audit record as one JSON line per
	// Write, besides ProxyAgent.Connection.log. It is called on the request
	// path: it must be quick and safe for concurrent use.
	AuditLog io.Writer
	// OnAudit is called with every audit record, on the request path. It
	// must be quick, safe for concurrent use, and must not keep rec.
	OnAudit func(rec *msp.AuditRecord)
	// Metrics receives the proxy's Prometheus series; none are recorded
	// when nil, unless Config.MetricsAddr asks for them to be served (then
	// the agent makes a registry of its own). When both are set, Metrics
	// must also be a prometheus.Gatherer, which is what is served.
	Metrics prometheus.Registerer
	// Dial opens the connections to the host endpoints (after
	// Config.Endpoints is applied); a net.Dialer when nil.
	Dial proxy.DialFunc
	// Resolver identifies the caller behind each client connection; the
	// eBPF connect record and /proc when nil.
	Resolver proxy.CallerResolver
	// OnSnapshot sees every snapshot the key latch publishes. It must not
	// block.
	OnSnapshot func(*keylatch.Snapshot)
	// Ready is called once the proxy listens, with its address. It is never
	// called when the listener cannot bind (status.json then says why), so
	// do not wait on it without a deadline.
	Ready func(netip.AddrPort)
	// Start is the process start, from which provisioning and the log's
	// elapsed times count; the time of New when zero.
	Start time.Time
	// RunCommand runs systemctl to set the CPU quota after provisioning;
	// os/exec when nil.
	RunCommand RunCommand
}

// Agent is the whole guest agent: eBPF redirect, key latch, the
// authorizing and signing proxy, provisioning and status.json. Create it
// with New and run it once with Run.
type Agent struct {
	cfg  Config
	opts Options
	ran  bool
	mu   sync.Mutex
}

// New checks cfg and returns an agent that is not running yet. opts may be
// nil.
func New(cfg Config, opts *Options) (*Agent, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	if o.Metrics != nil && c.MetricsAddr != "" {
		if _, ok := o.Metrics.(prometheus.Gatherer); !ok {
			return nil, fmt.Errorf("%w: MetricsAddr is set and Options.Metrics is not a prometheus.Gatherer to serve", ErrConfig)
		}
	}
	return &Agent{cfg: c, opts: o}, nil
}

// ErrAlreadyRun is returned by a second call of Run.
var ErrAlreadyRun = errors.New("agent: Run called twice")

// Run runs the agent until ctx ends, then stops it: the listener closes,
// requests in flight get up to 5 s to finish, the programs are detached
// (or stay pinned, with Config.PinFolder) and status.json gets its final
// state. A component that fails to start (the eBPF redirector, the
// listener, the status writer) is reported in status.json and by --status
// while the others keep running, as upstream does. Run returns an error
// only for what stops the whole agent: the log files, the key store and the
// key latch, the connection log, the metrics registration (a registry that
// already has the proxy's series) and the proxy's configuration.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.ran {
		a.mu.Unlock()
		return ErrAlreadyRun
	}
	a.ran = true
	a.mu.Unlock()

	cfg, o := &a.cfg, &a.opts
	uptimeMS := func() int64 { return time.Since(o.Start).Milliseconds() }
	logger, closeLog, err := openLogger(cfg, o.Logger)
	if err != nil {
		return err
	}
	defer closeLog()
	vm, logger := newVMSide(cfg, o, logger, uptimeMS())
	logger.Info(fmt.Sprintf("============== GuestProxyAgent (%s) is starting, elapsed: %d", cfg.Version, uptimeMS()))
	for _, w := range cfg.Warnings {
		logger.Warn("configuration: " + w)
	}
	logDifferences(logger)
	defer func() {
		logger.Info(fmt.Sprintf("============== GuestProxyAgent is stopping, elapsed: %d", uptimeMS()))
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	reg := status.NewRegistry(&status.RegistryOptions{Version: cfg.Version, Logger: logger})
	prov, err := status.NewProvision(&status.ProvisionOptions{Registry: reg, KeyDir: cfg.KeyFolder, Timeout: cfg.ProvisionTimeout, Logger: logger,
		Console: vm.console, OnFinished: vm.provisioned})
	if err != nil {
		return err
	}

	// 1. The redirector. Its failure is reported, not fatal: the listener
	// and the latch still serve /provision so cloud-init learns why.
	var redir *ebpf.Redirector
	var redirect keylatch.RedirectPolicy
	if cfg.NoRedirect {
		reg.Set(status.ModuleRedirector, msp.ModuleStopped, "Failed to start redirector: eBPF disabled by the caller")
	} else {
		reg.Set(status.ModuleRedirector, msp.ModuleUnknown, "eBPF redirector is starting")
		redir, err = startRedirector(ctx, cfg, logger)
		if err != nil {
			reg.Set(status.ModuleRedirector, msp.ModuleStopped, "Failed to start redirector: "+err.Error())
			logger.Error("eBPF redirector failed", "err", err)
		} else {
			defer redir.Close()
			redirect = redir.Policy()
			reg.Set(status.ModuleRedirector, msp.ModuleRunning, fmt.Sprintf("Started Redirector with eBPF maps - %d", uptimeMS()))
			if err := prov.SetReady(ctx, status.RedirectorReady); err != nil {
				logger.Warn("provisioning state files", "err", err)
			}
		}
	}

	// 2. The key latch.
	// Upstream creates the key folder's parents (create_dir_all); the
	// store makes the key folder itself, root-only.
	if err := os.MkdirAll(filepath.Dir(cfg.KeyFolder), 0o755); err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	store, err := keylatch.OpenStore(&keylatch.StoreOptions{Dir: cfg.KeyFolder, Logger: logger})
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	if err := store.EnsureRulesDir(); err != nil {
		// Local rules are optional; the folder's absence only means none.
		logger.Warn("cannot create the local rules folder", "err", err)
	}
	client := keylatch.NewClient(&keylatch.ClientOptions{Addr: cfg.endpointAddr(msp.EndpointWireServer), Logger: logger})
	latcher, err := keylatch.NewLatcher(&keylatch.LatcherOptions{
		Client:           client,
		Store:            store,
		PollInterval:     cfg.PollInterval,
		Uptime:           func() time.Duration { return time.Since(o.Start) },
		LocalRules:       true,
		EvaluatorOptions: &msp.EvaluatorOptions{Matcher: cfg.Matcher, ShadowDecider: msp.MatcherLegacy, OnDivergence: func(d msp.Divergence) { logger.Warn(d.String()) }},
		Redirect:         redirect,
		OnStatus: func(s keylatch.Status) {
			reg.Set(status.ModuleKeyLatch, s.State, s.Message)
		},
		OnLatched: func() {
			if err := prov.SetReady(ctx, status.KeyLatchReady); err != nil {
				logger.Warn("provisioning state files", "err", err)
			}
		},
		Logger: logger,
	})
	if err != nil {
		return err
	}

	// 3. The proxy.
	resolver := o.Resolver
	if resolver == nil {
		var lookup proxy.AuditLookup = noAudit{}
		if redir != nil {
			lookup = redir.Audit()
		}
		resolver = proxy.NewProcResolver(lookup, nil)
	}
	audit, err := openAuditLog(cfg, o.AuditLog)
	if err != nil {
		return err
	}
	defer audit.Close()
	pm, gatherer, err := proxyMetrics(cfg, o.Metrics)
	if err != nil {
		return err
	}
	srv, err := proxy.New(proxy.Config{
		Resolver:  resolver,
		Latch:     latcher,
		Dial:      overrideDialer(cfg, o.Dial),
		Now:       latcher.HostNow,
		Provision: prov,
		AggregateStatus: func(context.Context) ([]byte, error) {
			return reg.Snapshot(time.Now()).MarshalCompact()
		},
		AuditLog:  audit,
		Summaries: auditSinks{registrySummaries{reg}, o.OnAudit},
		Metrics:   pm,
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	ln, err := listenWithRetry(ctx, cfg.ListenAddr)
	if err != nil {
		reg.Set(status.ModuleListener, msp.ModuleStopped, fmt.Sprintf("IO error: Failed to bind TcpListener '%s': %v", cfg.ListenAddr, err))
		logger.Error("proxy listener failed", "err", err)
	}

	var wg sync.WaitGroup
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, proxy.ErrServerClosed) {
				logger.Error(name+" stopped", "err", err)
			}
		}()
	}
	if ln != nil {
		// Serve's own context would cut every connection the moment ctx
		// ends; Shutdown below is what stops it, letting requests in
		// flight finish.
		goRun("proxy", func(ctx context.Context) error { return srv.Serve(context.WithoutCancel(ctx), ln) })
		reg.Set(status.ModuleListener, msp.ModuleRunning, fmt.Sprintf("Started proxy listener, ready to accept request - %d", uptimeMS()))
		if err := prov.SetReady(ctx, status.ListenerReady); err != nil {
			logger.Warn("provisioning state files", "err", err)
		}
		if o.Ready != nil {
			o.Ready(cfg.ListenAddr)
		}
	}
	if cfg.MetricsAddr != "" {
		goRun("metrics", func(ctx context.Context) error { return serveMetrics(ctx, cfg.MetricsAddr, gatherer, logger, pm.Panic) })
	}

	// 4. Snapshots feed status.json and provisioning; /provision's notify
	// wakes the latch.
	snaps, unsubscribe := latcher.Subscribe()
	defer unsubscribe()
	feed := &statusFeed{reg: reg, prov: prov, latch: latcher, onSnapshot: o.OnSnapshot}
	goRun("status feed", func(ctx context.Context) error { return feed.run(ctx, snaps) })
	prov.StartTimer()
	goRun("key latch", latcher.Run)
	goRun("telemetry and rule snapshots", func(ctx context.Context) error { return vm.runAll(ctx, latcher, client) })
	goRun("provisioning", prov.Run)
	var writer *status.Writer
	if cfg.StatusFolder != "" {
		writer, err = status.NewWriter(reg, &status.WriterOptions{Path: filepath.Join(cfg.StatusFolder, StatusFileName), Logger: logger})
		if err != nil {
			logger.Error("status.json writer", "err", err)
		} else {
			goRun("status writer", writer.Run)
		}
	}

	<-ctx.Done()
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		srv.Close()
	}
	wg.Wait()
	vm.quotaDone.Wait()
	// Say what a stopped agent leaves behind: pinned programs keep
	// redirecting until the next start takes them over; unpinned ones go.
	reg.Set(status.ModuleListener, msp.ModuleStopped, "proxy listener stopped: the agent is shutting down")
	if redir != nil && cfg.PinFolder == "" {
		reg.Set(status.ModuleRedirector, msp.ModuleStopped, "eBPF programs detached: the agent is shutting down")
	}
	if writer != nil {
		_ = writer.WriteOnce() // the final state, STOPPED modules included
	}
	return nil
}

// proxyMetrics returns the proxy's Metrics and what /metrics serves.
func proxyMetrics(cfg *Config, reg prometheus.Registerer) (proxy.Metrics, prometheus.Gatherer, error) {
	if reg == nil {
		if cfg.MetricsAddr == "" {
			return nil, nil, nil
		}
		r := metrics.NewRegistry()
		reg = r
	}
	m, err := metrics.NewProxy(reg)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: register the proxy's metrics: %w", err)
	}
	g, _ := reg.(prometheus.Gatherer)
	return m, g, nil
}

func startRedirector(ctx context.Context, cfg *Config, logger *slog.Logger) (*ebpf.Redirector, error) {
	path := cfg.CgroupPath
	if path == "" {
		root, err := ebpf.CgroupV2Root()
		if err != nil {
			return nil, err
		}
		path = root
	}
	r, err := ebpf.Load(ctx, ebpf.Options{CgroupPath: path, PinPath: cfg.PinFolder, Proxy: cfg.ListenAddr, Logger: logger})
	if err != nil {
		return nil, err
	}
	// The agent's own upstream connections must reach the host.
	if err := r.ExemptSelf(); err != nil {
		r.Close()
		return nil, fmt.Errorf("exempt the agent from redirection: %w", err)
	}
	// Loading parsed the kernel's BTF (several MB, garbage once the
	// programs are in the kernel). Hand it back to the OS now rather than
	// whenever the scavenger gets to it: an idle agent should look idle.
	debug.FreeOSMemory()
	return r, nil
}

// overrideDialer dials Config.Endpoints' addresses instead of the real ones
// (tests only), through dial or a net.Dialer.
func overrideDialer(cfg *Config, dial proxy.DialFunc) proxy.DialFunc {
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	if len(cfg.Endpoints) == 0 {
		return dial
	}
	over := map[netip.AddrPort]netip.AddrPort{}
	for ep, a := range cfg.Endpoints {
		over[ep.AddrPort()] = a
	}
	return func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		if a, ok := over[dst]; ok {
			dst = a
		}
		return dial(ctx, dst)
	}
}

// listenWithRetry binds like upstream: on EADDRINUSE up to 5 retries a
// second apart, then one last attempt.
func listenWithRetry(ctx context.Context, addr netip.AddrPort) (net.Listener, error) {
	// No TCP keep-alive probes on accepted connections: they are loopback
	// clients the idle timeout already bounds, and enabling them costs
	// three setsockopt calls per connection.
	lc := net.ListenConfig{KeepAlive: -1}
	for i := 0; ; i++ {
		ln, err := lc.Listen(ctx, "tcp", addr.String())
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || i == 5 {
			return ln, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// openLogger returns the agent's logger: base (slog.Default() when nil)
// and, with a LogFolder, ProxyAgent.log, both at cfg.LogLevel.
func openLogger(cfg *Config, base *slog.Logger) (*slog.Logger, func(), error) {
	if base == nil {
		base = slog.Default()
	}
	handlers := []slog.Handler{levelHandler{base.Handler(), cfg.LogLevel}}
	closeFn := func() {}
	if cfg.LogFolder != "" {
		if err := mkdirLogs(cfg.LogFolder); err != nil {
			return nil, nil, fmt.Errorf("log folder: %w", err)
		}
		f, err := logfile.Open(filepath.Join(cfg.LogFolder, AgentLogName), logMaxBytes, logMaxFiles)
		if err != nil {
			return nil, nil, fmt.Errorf("agent log: %w", err)
		}
		handlers = append(handlers, slog.NewTextHandler(f, &slog.HandlerOptions{Level: cfg.LogLevel}))
		closeFn = func() { f.Close() }
	}
	return slog.New(slog.NewMultiHandler(handlers...)), closeFn, nil
}

// levelHandler raises the least level of a handler the caller gave.
type levelHandler struct {
	slog.Handler
	min slog.Level
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(as), h.min}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(name), h.min}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// openAuditLog returns where the proxy writes its audit lines:
// ProxyAgent.Connection.log with a LogFolder, and hook.
func openAuditLog(cfg *Config, hook io.Writer) (io.WriteCloser, error) {
	if cfg.LogFolder == "" {
		if hook == nil {
			return nopCloser{io.Discard}, nil
		}
		return nopCloser{hook}, nil
	}
	f, err := logfile.Open(filepath.Join(cfg.LogFolder, ConnectionLogName), logMaxBytes, logMaxFiles)
	if err != nil {
		return nil, fmt.Errorf("connection log: %w", err)
	}
	// One write per batch instead of per request; Close writes the rest.
	f.Buffer(connectionLogFlush)
	if hook == nil {
		return f, nil
	}
	return struct {
		io.Writer
		io.Closer
	}{io.MultiWriter(f, hook), f}, nil
}
