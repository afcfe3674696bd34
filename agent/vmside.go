package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metadatasec/gpa/agent/telemetry"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

// vmSide is what upstream does on a VM besides authorizing and signing:
// telemetry events, rule snapshots in the log folder, the serial console
// lines and the CPU quota after provisioning.
type vmSide struct {
	cfg     *Config
	logger  *slog.Logger // the agent's, its records sent as events too
	console *serialConsole
	tel     *telemetry.Pipeline
	run     RunCommand

	client atomic.Pointer[keylatch.Client]
	latch  atomic.Pointer[keylatch.Latcher]
	quota  sync.Once
	// quotaDone tracks the CPU quota call, which Run waits for before it
	// closes the log: a slow systemctl must not outlive the agent.
	quotaDone sync.WaitGroup
}

var errNoClient = errors.New("agent: the WireServer client is not ready")

// newVMSide writes the start-up console line and returns the side and the
// logger the agent uses from now on, whose records also become telemetry
// events.
func newVMSide(cfg *Config, o *Options, logger *slog.Logger, elapsedMS int64) (*vmSide, *slog.Logger) {
	v := &vmSide{cfg: cfg, logger: logger, run: o.RunCommand,
		console: &serialConsole{path: cfg.SerialConsole, version: cfg.Version, now: time.Now}}
	if v.run == nil {
		v.run = runCommand
	}
	vm := telemetry.LocalVMData()
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	v.console.line(fmt.Sprintf("============== GuestProxyAgent (%s) is starting on %s(%s), elapsed: %d", cfg.Version, vm.OSVersion, arch, elapsedMS))
	tel, err := telemetry.New(&telemetry.Options{
		Dir: cfg.EventFolder, MaxEventFiles: cfg.MaxEventFileCount, Sender: v, Signer: v.signer,
		VMData: func(context.Context) telemetry.VMData { return vm }, FlushInterval: cfg.TelemetryInterval, Logger: logger,
	})
	if err != nil {
		logger.Error("telemetry disabled", "err", err)
		return v, logger
	}
	v.tel = tel
	// The pipeline logs to the logger without its own handler, so that it
	// never feeds itself.
	v.logger = slog.New(slog.NewMultiHandler(logger.Handler(), tel.Handler(cfg.EventLogLevel, cfg.Version)))
	return v, v.logger
}

// SendTelemetry posts through the agent's WireServer client once Run has
// made it.
func (v *vmSide) SendTelemetry(ctx context.Context, xml []byte, signer *msp.Signer) error {
	c := v.client.Load()
	if c == nil {
		return errNoClient
	}
	return c.SendTelemetry(ctx, xml, signer)
}

// signer is the latched key's, as the proxy signs with; nil before a key.
func (v *vmSide) signer() *msp.Signer {
	if l := v.latch.Load(); l != nil {
		if s := l.Current(); s != nil {
			return s.Signer
		}
	}
	return nil
}

// provisioned is status.ProvisionOptions.OnFinished: the CPU quota, once,
// as upstream sets it when provisioning finishes or times out.
func (v *vmSide) provisioned(ctx context.Context, _ status.ProvisionResult) {
	v.quota.Do(func() { v.quotaDone.Go(func() { setCPUQuota(ctx, v.run, v.logger) }) })
}

// runAll runs telemetry and the rule snapshot writer until ctx ends.
func (v *vmSide) runAll(ctx context.Context, latcher *keylatch.Latcher, client *keylatch.Client) error {
	v.client.Store(client)
	v.latch.Store(latcher)
	var wg sync.WaitGroup
	if v.tel != nil {
		wg.Go(func() { _ = v.tel.Run(ctx) })
	}
	if v.cfg.LogFolder != "" {
		snaps, unsubscribe := latcher.Subscribe()
		defer unsubscribe()
		w := &ruleSnapshots{dir: v.cfg.LogFolder, keep: RuleSnapshotsKept, now: time.Now, logger: v.logger}
		w.observe(latcher.Current())
		wg.Go(func() { _ = w.run(ctx, snaps) })
	}
	wg.Wait()
	return ctx.Err()
}
