package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func mkdirLogs(dir string) error { return os.MkdirAll(dir, 0o755) }

// errNoRedirector is what a caller lookup fails with when eBPF is not
// running.
var errNoRedirector = errors.New("agent: eBPF redirector not running")

// noAudit is the lookup without eBPF: no connection can be attributed, so
// every proxied request gets 421, as upstream answers then.
type noAudit struct{}

func (noAudit) LookupAndDelete(netip.AddrPort) (msp.ConnectRecord, error) {
	return msp.ConnectRecord{}, errNoRedirector
}

// statusFeed carries each latch snapshot into status.json and
// provisioning, and a /provision notify into the latch.
type statusFeed struct {
	reg        *status.Registry
	prov       *status.Provision
	latch      latch
	onSnapshot func(*keylatch.Snapshot)
}

// latch is what the feed needs of a *keylatch.Latcher.
type latch interface {
	Current() *keylatch.Snapshot
	Wake()
}

func (f *statusFeed) run(ctx context.Context, snaps <-chan *keylatch.Snapshot) error {
	// A restarted latch starts from the state it kept on disk, published
	// before the feed subscribed.
	if s := f.latch.Current(); s != nil && s.Restored {
		f.snapshot(s)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-snaps:
			f.snapshot(s)
		case <-f.prov.Notify():
			f.notify()
		}
	}
}

func (f *statusFeed) snapshot(s *keylatch.Snapshot) {
	f.reg.SetKeyLatchStates(keyLatchStates(s))
	f.prov.SetLatched(s.Latched())
	if f.onSnapshot != nil {
		f.onSnapshot(s)
	}
}

// notify is a caller of /provision asking: a latch without a key gets
// provisioning's key-latch flag cleared (upstream's reset) and a poll now.
func (f *statusFeed) notify() {
	if !f.latch.Current().Latched() {
		f.prov.ResetKeyLatch()
	}
	f.latch.Wake()
}

// keyLatchStates is status.json's view of a snapshot.
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

// registrySummaries counts every request (proxyConnectionsCount) and feeds
// the two connection summaries of status.json, whose 15-minute buckets
// the status package keeps.
type registrySummaries struct{ reg *status.Registry }

func (s registrySummaries) Add(r *msp.AuditRecord) {
	s.reg.CountRequest()
	c := status.Connection{UserName: r.UserName, UserGroups: r.UserGroups, ClientIP: r.ClientIP, IP: r.IP, Port: r.Port,
		ProcessFullPath: r.ProcessFullPath, ProcessCmdLine: r.ProcessCmdLine, ResponseStatus: r.ResponseStatus}
	if c.IP == "" {
		c.IP = "None"
	}
	s.reg.Connections().Record(r.Time, c)
	if r.FailedAuthorization() {
		s.reg.FailedAuthentications().Record(r.Time, c)
	}
}

// auditSinks is status.json's sink and the embedder's callback in one.
type auditSinks struct {
	summaries registrySummaries
	onAudit   func(*msp.AuditRecord)
}

func (s auditSinks) Add(r *msp.AuditRecord) {
	s.summaries.Add(r)
	if s.onAudit != nil {
		s.onAudit(r)
	}
}

// serveMetrics serves g at /metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, g prometheus.Gatherer, logger *slog.Logger, onPanic func()) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return newMetricsServer(promhttp.HandlerFor(g, promhttp.HandlerOpts{}), logger, onPanic).serve(ctx, ln)
}
