package main

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
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/proxy"
	"github.com/metadatasec/gpa/status"
)

// Log file names upstream uses in logFolder.
const (
	agentLogName      = "ProxyAgent.log"
	connectionLogName = "ProxyAgent.Connection.log"
	statusFileName    = "status.json"
	logMaxBytes       = 10 << 20
	logMaxFiles       = 5
	// connectionLogFlush bounds how stale ProxyAgent.Connection.log may be.
	connectionLogFlush = 100 * time.Millisecond
)

// runOptions are what the service, console mode, the demo and the tests
// vary. The zero value runs the service as on a VM.
type runOptions struct {
	// NoRedirect skips eBPF entirely (tests of the CLI contract): the
	// redirector is reported STOPPED, as on a kernel without support.
	NoRedirect bool
	// AuditHook receives a copy of every audit line (the demo reads them).
	AuditHook io.Writer
	// Ready is called once the listener is up, with its address.
	Ready func(addr netip.AddrPort)
	// Stderr is where logs go besides the log file; os.Stderr when nil.
	Stderr io.Writer
	// Start is the process start, for the " - <ms>" suffixes.
	Start time.Time
	// OnSnapshot, if set, sees every snapshot the latch publishes.
	OnSnapshot func(*keylatch.Snapshot)
	// ProvisionTimeout overrides the 120 s provisioning timeout (tests).
	ProvisionTimeout time.Duration
}

// runAgent composes the packages into the agent and runs until ctx ends:
// eBPF redirect, key latch, proxy listener, provisioning and status.json.
// A component that fails is reported in status.json and by --status, and
// the others keep running, as upstream does.
func runAgent(ctx context.Context, cfg *Config, o runOptions) error {
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	uptimeMS := func() int64 { return time.Since(o.Start).Milliseconds() }
	stderr := o.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	logger, closeLog, err := openLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	logger.Info(fmt.Sprintf("============== GuestProxyAgent (%s) is starting, elapsed: %d", version, uptimeMS()))
	defer func() {
		logger.Info(fmt.Sprintf("============== GuestProxyAgent is stopping, elapsed: %d", uptimeMS()))
	}()

	matcher, err := cfg.MatcherMode()
	if err != nil {
		return err
	}
	listen, err := netip.ParseAddrPort(cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("%w: listenAddress: %v", ErrConfig, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	reg := status.NewRegistry(status.RegistryOptions{Version: version, Logger: logger})
	prov, err := status.NewProvision(status.ProvisionOptions{Registry: reg, KeyDir: cfg.LatchKeyFolder, Timeout: o.ProvisionTimeout, Logger: logger})
	if err != nil {
		return err
	}

	// 1. The redirector. Its failure is reported, not fatal: the listener
	// and the latch still serve /provision so cloud-init learns why.
	var redir *ebpf.Redirector
	var redirect keylatch.RedirectPolicy
	if o.NoRedirect {
		reg.Set(status.ModuleRedirector, status.StateStopped, "Failed to start redirector: eBPF disabled by the caller")
	} else {
		reg.Set(status.ModuleRedirector, status.StateUnknown, "eBPF redirector is starting")
		redir, err = startRedirector(ctx, cfg, logger)
		if err != nil {
			reg.Set(status.ModuleRedirector, status.StateStopped, "Failed to start redirector: "+err.Error())
			logger.Error("eBPF redirector failed", "err", err)
		} else {
			defer redir.Close()
			redirect = &redirectPolicy{policy: redir.Policy(), proxy: listen}
			reg.Set(status.ModuleRedirector, status.StateRunning, fmt.Sprintf("Started Redirector with eBPF maps - %d", uptimeMS()))
			if err := prov.SetReady(ctx, status.RedirectorReady); err != nil {
				logger.Warn("provisioning state files", "err", err)
			}
		}
	}

	// 2. The key latch.
	wsAddr, err := cfg.EndpointAddr(msp.EndpointWireServer)
	if err != nil {
		return err
	}
	store, err := keylatch.OpenStore(&keylatch.StoreOptions{Dir: cfg.LatchKeyFolder})
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	if err := store.EnsureRulesDir(); err != nil {
		// Local rules are optional; the folder's absence only means none.
		logger.Warn("cannot create the local rules folder", "err", err)
	}
	client := keylatch.NewClient(&keylatch.ClientOptions{Addr: wsAddr, Logger: logger})
	latcher, err := keylatch.NewLatcher(&keylatch.LatcherOptions{
		Client:           client,
		Store:            store,
		PollInterval:     cfg.PollInterval(),
		Uptime:           func() time.Duration { return time.Since(o.Start) },
		LocalRules:       true,
		EvaluatorOptions: &msp.EvaluatorOptions{Matcher: matcher, OnDivergence: divergenceLogger(logger)},
		Redirect:         redirect,
		OnStatus: func(s keylatch.Status) {
			reg.Set(status.ModuleKeyLatch, status.ModuleState(s.State), s.Message)
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
	var lookup proxy.AuditLookup = noAudit{}
	if redir != nil {
		lookup = auditLookup{redir.Audit()}
	}
	audit, err := openAuditLog(cfg, o.AuditHook)
	if err != nil {
		return err
	}
	defer audit.Close()
	srv, err := proxy.New(proxy.Config{
		Resolver:   proxy.NewProcResolver(lookup, nil),
		Snapshots:  latcher.Current,
		Refresh:    latcher.WaitNewKey,
		AwaitKnown: latcher.WaitKnown,
		Dial:       overrideDialer(cfg),
		Now:        latcher.HostNow,
		Provision:  prov,
		AggregateStatus: func(context.Context) ([]byte, error) {
			return reg.Snapshot(time.Now()).MarshalCompact()
		},
		AuditLog:  audit,
		Summaries: proxy.RegistrySummaries{Registry: reg},
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	ln, err := listenWithRetry(ctx, listen)
	if err != nil {
		reg.Set(status.ModuleListener, status.StateStopped, fmt.Sprintf("IO error: Failed to bind TcpListener '%s': %v", listen, err))
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
		goRun("proxy", func(ctx context.Context) error { return srv.Serve(ctx, ln) })
		reg.Set(status.ModuleListener, status.StateRunning, fmt.Sprintf("Started proxy listener, ready to accept request - %d", uptimeMS()))
		if err := prov.SetReady(ctx, status.ListenerReady); err != nil {
			logger.Warn("provisioning state files", "err", err)
		}
		if o.Ready != nil {
			o.Ready(listen)
		}
	}
	if cfg.MetricsAddress != "" {
		goRun("metrics", func(ctx context.Context) error { return serveMetrics(ctx, cfg.MetricsAddress, srv) })
	}

	// 4. Snapshots feed status.json and provisioning; /provision's notify
	// wakes the latch.
	snaps, unsubscribe := latcher.Subscribe()
	defer unsubscribe()
	goRun("status feed", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case s := <-snaps:
				reg.SetKeyLatchStates(keyLatchStates(s))
				prov.SetLatched(s.Latched())
				if o.OnSnapshot != nil {
					o.OnSnapshot(s)
				}
			case <-prov.Notify():
				if !latcher.Current().Latched() {
					prov.ResetKeyLatch()
				}
				latcher.Wake()
			}
		}
	})
	prov.StartTimer()
	goRun("key latch", latcher.Run)
	goRun("provisioning", prov.Run)
	writer, err := status.NewWriter(reg, status.WriterOptions{Path: filepath.Join(cfg.StatusFolder, statusFileName), Logger: logger})
	if err != nil {
		logger.Error("status.json writer", "err", err)
	} else {
		goRun("status writer", writer.Run)
	}

	<-ctx.Done()
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		srv.Close()
	}
	wg.Wait()
	// Say what a stopped agent leaves behind: pinned programs keep
	// redirecting until the next start takes them over; unpinned ones go.
	reg.Set(status.ModuleListener, status.StateStopped, "proxy listener stopped: the agent is shutting down")
	if redir != nil && cfg.BPFPinFolder == "" {
		reg.Set(status.ModuleRedirector, status.StateStopped, "eBPF programs detached: the agent is shutting down")
	}
	if writer != nil {
		_ = writer.WriteOnce() // the final state, STOPPED modules included
	}
	return nil
}

// serveMetrics serves Prometheus metrics at /metrics until ctx ends, with
// the proxy's own HTTP code: a net/http server would link TLS into the
// agent.
func serveMetrics(ctx context.Context, addr string, srv *proxy.Server) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return srv.ServeMetrics(ctx, ln)
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
	r, err := ebpf.Load(ctx, ebpf.Options{CgroupPath: path, PinPath: cfg.BPFPinFolder, Logger: logger})
	if err != nil {
		return nil, err
	}
	// The agent's own upstream connections must reach the host.
	if err := r.Skip().Add(uint32(os.Getpid())); err != nil {
		r.Close()
		return nil, fmt.Errorf("add own pid to the skip list: %w", err)
	}
	return r, nil
}

// redirectPolicy programs the eBPF policy map from the latch's redirect
// set: one source of truth for what is redirected.
type redirectPolicy struct {
	mu     sync.Mutex
	policy *ebpf.PolicyMap
	proxy  netip.AddrPort
}

func (r *redirectPolicy) SetRedirect(_ context.Context, eps []msp.Endpoint) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[msp.Endpoint]bool{}
	for _, ep := range eps {
		want[ep] = true
	}
	var errs []error
	for _, ep := range msp.Endpoints {
		if want[ep] {
			errs = append(errs, r.policy.Set(ep.AddrPort(), r.proxy))
		} else if err := r.policy.Delete(ep.AddrPort()); err != nil && !errors.Is(err, ebpf.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type auditLookup struct{ m *ebpf.AuditMap }

func (a auditLookup) LookupAndDelete(client netip.AddrPort) (proxy.ConnectRecord, error) {
	r, err := a.m.LookupAndDelete(client)
	if err != nil {
		return proxy.ConnectRecord{}, err
	}
	return proxy.ConnectRecord{PID: r.PID, UID: r.UID, GID: r.GID, OriginalDst: r.OriginalDst}, nil
}

// noAudit is the lookup without eBPF: no connection can be attributed, so
// every proxied request gets 421, as upstream answers then.
type noAudit struct{}

func (noAudit) LookupAndDelete(netip.AddrPort) (proxy.ConnectRecord, error) {
	return proxy.ConnectRecord{}, errors.New("eBPF redirector not running")
}

func keyLatchStates(s *keylatch.Snapshot) status.KeyLatchStates {
	k := status.KeyLatchStates{SecureChannelState: s.State,
		WireServerRuleID: s.RuleIDs[msp.EndpointWireServer], IMDSRuleID: s.RuleIDs[msp.EndpointIMDS], HostGARuleID: s.RuleIDs[msp.EndpointHostGA]}
	if s.Key.Valid() {
		k.KeyGUID = s.Key.GUID
	}
	if s.KeyIncarnationID != nil {
		k.KeyIncarnationID = strconv.FormatUint(uint64(*s.KeyIncarnationID), 10)
	}
	return k
}

func divergenceLogger(l *slog.Logger) func(msp.Divergence) {
	return func(d msp.Divergence) { l.Warn(d.String()) }
}

// overrideDialer dials the configured endpoint overrides instead of the real
// addresses (tests only); with none it is a plain dialer.
func overrideDialer(cfg *Config) proxy.DialFunc {
	over := map[netip.AddrPort]netip.AddrPort{}
	for _, ep := range msp.Endpoints {
		if a, err := cfg.EndpointAddr(ep); err == nil && a != ep.AddrPort() {
			over[ep.AddrPort()] = a
		}
	}
	var d net.Dialer
	return func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		if a, ok := over[dst]; ok {
			dst = a
		}
		return d.DialContext(ctx, "tcp", dst.String())
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

func openLogger(cfg *Config, stderr io.Writer) (*slog.Logger, func(), error) {
	var w io.Writer = stderr
	closeFn := func() {}
	if cfg.LogFolder != "" {
		if err := os.MkdirAll(cfg.LogFolder, 0o755); err != nil {
			return nil, nil, fmt.Errorf("log folder: %w", err)
		}
		f, err := proxy.OpenRotatingFile(filepath.Join(cfg.LogFolder, agentLogName), logMaxBytes, logMaxFiles)
		if err != nil {
			return nil, nil, fmt.Errorf("agent log: %w", err)
		}
		w = io.MultiWriter(stderr, f)
		closeFn = func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: logLevel(cfg.FileLogLevel)})), closeFn, nil
}

func logLevel(s string) slog.Level {
	switch s {
	case "Trace", "trace", "Debug", "debug", "TRACE", "DEBUG":
		return slog.LevelDebug
	case "Warn", "warn", "WARN":
		return slog.LevelWarn
	case "Error", "error", "ERROR":
		return slog.LevelError
	}
	return slog.LevelInfo
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func openAuditLog(cfg *Config, hook io.Writer) (io.WriteCloser, error) {
	if cfg.LogFolder == "" {
		if hook == nil {
			return nopCloser{io.Discard}, nil
		}
		return nopCloser{hook}, nil
	}
	f, err := proxy.OpenRotatingFile(filepath.Join(cfg.LogFolder, connectionLogName), logMaxBytes, logMaxFiles)
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
