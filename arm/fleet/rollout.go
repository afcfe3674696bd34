package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/metadatasec/gpa/arm"
)

// Errors that end a rollout early. The state file keeps what was done; run
// again with the same state file to continue.
var (
	// ErrTooManyFailures: more resources failed than MaxFailures allows.
	ErrTooManyFailures = errors.New("fleet: too many failures, rollout stopped")
	// ErrGateStopped: BeforeWave refused the next wave.
	ErrGateStopped = errors.New("fleet: wave gate stopped the rollout")
)

// Status is what happened to one resource of a rollout.
type Status string

// The statuses of a rollout's resources.
const (
	// StatusWritten: the client changed the resource.
	StatusWritten Status = "written"
	// StatusUnchanged: the resource already had the desired state (or,
	// for a key reset, a key raised since the reset began).
	StatusUnchanged Status = "unchanged"
	// StatusFailed: the change failed; a resumed rollout tries again.
	StatusFailed Status = "failed"
	// StatusSkipped: the state file says the resource is finished.
	StatusSkipped Status = "skipped"
	// StatusDryRun: the change that would be sent (Event.Detail).
	StatusDryRun Status = "dry-run"
)

func (s Status) finished() bool { return s == StatusWritten || s == StatusUnchanged }

// Wave is one stage of a rollout: targets From (inclusive) to To
// (exclusive) of the plan, numbered from 1.
type Wave struct {
	Index, Of int
	From, To  int
}

// Event reports one resource of a rollout.
type Event struct {
	Wave   int
	ID     string
	Kind   Kind
	Status Status
	// Detail is the change made or, in a dry run, the body that would be
	// sent.
	Detail string
	Err    error
}

// RolloutOptions are the options of Apply and ResetKeys; nil is fine.
type RolloutOptions struct {
	// Waves are cumulative fractions of the plan, each in (0, 1], rising,
	// for example 0.01, 0.1, 0.5, 1. Default one wave of everything. A
	// last value below 1 leaves the rest for a later run.
	Waves []float64
	// MaxParallel bounds resources in progress at once. Default 10.
	MaxParallel int
	// MaxFailures is how many resources may fail in this run before the
	// rollout stops starting new ones (in-flight ones finish) and returns
	// ErrTooManyFailures. 0 stops at the first failure; negative never
	// stops.
	MaxFailures int
	// DryRun plans, reports each change with StatusDryRun and writes
	// nothing, the state file included.
	DryRun bool
	// StatePath is the state file. With one, a run that stops for any
	// reason (crash, Ctrl-C, gate, failures) continues where it left off
	// when started again with the same arguments.
	StatePath string
	// PollFrequency is how often update operations are polled. Default
	// 10s.
	PollFrequency time.Duration
	// BeforeWave runs before every wave after the first; an error stops
	// the rollout with ErrGateStopped.
	BeforeWave func(ctx context.Context, next Wave) error
	// OnEvent receives every resource's outcome. It is called from several
	// goroutines at once.
	OnEvent func(Event)
	// PageSize is passed to Inventory when planning.
	PageSize int
}

// RolloutResponse counts a rollout's outcomes in this run.
type RolloutResponse struct {
	Planned   int
	Written   int
	Unchanged int
	Skipped   int
	Failed    int
	DryRun    int
	// Waves is the number of waves completed in this run.
	Waves int
}

// target is a resource a rollout will work on.
type target struct {
	ID   string
	Kind Kind
}

// Apply brings the selected VMs and scale sets to the desired state. The
// plan is every VM and scale-set model that drifts, and every scale set with
// an instance that drifts or is not on the latest model; instances
// themselves are reached through their scale set. Each target is read
// through ARM and patched with If-Match only if it still drifts, so a
// resumed run never writes a resource twice.
func (c *Client) Apply(ctx context.Context, sel Selection, want Want, options *RolloutOptions) (RolloutResponse, error) {
	if err := want.Validate(); err != nil {
		return RolloutResponse{}, err
	}
	sel = want.Selection(sel)
	wantJSON, _ := json.Marshal(want.Settings)
	o := rolloutDefaults(options)
	r := &rollout{c: c, o: o, op: "apply", digest: digest("apply", sel, string(wantJSON))}
	r.plan = func(ctx context.Context) ([]target, error) {
		var plan []target
		added := map[string]bool{}
		_, err := c.Inventory(ctx, sel, func(res Resource) error {
			id := res.ID
			switch res.Kind {
			case KindVM, KindScaleSet:
				if want.Diff(res.Settings).Change == nil {
					return nil
				}
			case KindInstance:
				outdated := res.LatestModelApplied != nil && !*res.LatestModelApplied
				if want.Diff(res.Settings).Change == nil && !outdated {
					return nil
				}
				id = res.ScaleSetID()
			}
			if key := strings.ToLower(id); !added[key] {
				added[key] = true
				kind := res.Kind
				if kind == KindInstance {
					kind = KindScaleSet
				}
				plan = append(plan, target{ID: id, Kind: kind})
			}
			return nil
		}, &InventoryOptions{PageSize: o.PageSize})
		return plan, err
	}
	r.work = func(ctx context.Context, t target) (Status, string, error) {
		return c.applyOne(ctx, t, want, o)
	}
	return r.run(ctx)
}

// ResetKeys resets the latched key of every selected VM and scale-set
// instance (scale sets themselves have no key), through arm's reset, which
// raises keyIncarnationId with If-Match. Before each reset the key it starts
// from is recorded in the state file; a resumed run that finds the key
// already above it counts the reset as done instead of raising it again.
func (c *Client) ResetKeys(ctx context.Context, sel Selection, options *RolloutOptions) (RolloutResponse, error) {
	o := rolloutDefaults(options)
	r := &rollout{c: c, o: o, op: "reset-keys", digest: digest("reset-keys", sel, "")}
	r.plan = func(ctx context.Context) ([]target, error) {
		var plan []target
		_, err := c.Inventory(ctx, sel, func(res Resource) error {
			if res.Kind != KindScaleSet {
				plan = append(plan, target{ID: res.ID, Kind: res.Kind})
			}
			return nil
		}, &InventoryOptions{PageSize: o.PageSize})
		return plan, err
	}
	r.work = func(ctx context.Context, t target) (Status, string, error) {
		return c.resetOne(ctx, t, r.state, o)
	}
	return r.run(ctx)
}

func rolloutDefaults(options *RolloutOptions) RolloutOptions {
	var o RolloutOptions
	if options != nil {
		o = *options
	}
	if len(o.Waves) == 0 {
		o.Waves = []float64{1}
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = 10
	}
	if o.PollFrequency <= 0 {
		o.PollFrequency = 10 * time.Second
	}
	return o
}

// digest identifies a rollout for its state file.
func digest(op string, sel Selection, extra string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%q\n%q\n%s", op, sel.Query(), sel.Subscriptions, sel.ManagementGroups, extra)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ParseWaves reads "1%,10%,50%,100%" (or fractions, "0.01,0.1,1").
func ParseWaves(s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var v float64
		var err error
		if p, ok := strings.CutSuffix(part, "%"); ok {
			_, err = fmt.Sscanf(p, "%g", &v)
			v /= 100
		} else {
			_, err = fmt.Sscanf(part, "%g", &v)
		}
		if err != nil {
			return nil, fmt.Errorf("fleet: wave %q: %w", part, err)
		}
		out = append(out, v)
	}
	return out, checkWaves(out)
}

func checkWaves(w []float64) error {
	prev := 0.0
	for _, v := range w {
		if !(v > prev && v <= 1) {
			return fmt.Errorf("fleet: waves must rise within (0, 1] (or 0%%..100%%), got %v", w)
		}
		prev = v
	}
	return nil
}

// waveBounds cuts n targets into cumulative waves; every wave has at least
// one target when n allows, and empty waves are dropped.
func waveBounds(n int, waves []float64) []Wave {
	var out []Wave
	from := 0
	for _, f := range waves {
		to := min(max(int(math.Ceil(f*float64(n)-1e-9)), from+1), n)
		if to <= from {
			continue
		}
		out = append(out, Wave{From: from, To: to})
		from = to
	}
	for i := range out {
		out[i].Index, out[i].Of = i+1, len(out)
	}
	return out
}

// rollout is the engine shared by Apply and ResetKeys.
type rollout struct {
	c      *Client
	o      RolloutOptions
	op     string
	digest string
	plan   func(context.Context) ([]target, error)
	work   func(context.Context, target) (Status, string, error)
	state  *stateFile
}

func (r *rollout) run(ctx context.Context) (resp RolloutResponse, err error) {
	if err := checkWaves(r.o.Waves); err != nil {
		return resp, err
	}
	var plan []target
	if r.o.StatePath != "" && !r.o.DryRun {
		r.state, err = openState(r.o.StatePath, r.op, r.digest)
		if err != nil {
			return resp, err
		}
		defer func() {
			if cerr := r.state.close(); err == nil && cerr != nil {
				err = cerr
			}
		}()
		plan = r.state.plan
	}
	if plan == nil {
		if plan, err = r.plan(ctx); err != nil {
			return resp, err
		}
		if r.state != nil {
			if err := r.state.savePlan(plan); err != nil {
				return resp, err
			}
		}
	}
	resp.Planned = len(plan)
	r.c.log.InfoContext(ctx, "rollout planned", "op", r.op, "targets", len(plan), "resumed", r.state != nil && r.state.plan != nil)
	failures := 0
	for _, w := range waveBounds(len(plan), r.o.Waves) {
		if w.Index > 1 && r.o.BeforeWave != nil && !r.o.DryRun {
			if err := r.o.BeforeWave(ctx, w); err != nil {
				return resp, fmt.Errorf("%w before wave %d: %w", ErrGateStopped, w.Index, err)
			}
		}
		if err := r.runWave(ctx, w, plan[w.From:w.To], &resp, &failures); err != nil {
			return resp, err
		}
		resp.Waves++
	}
	return resp, nil
}

func (r *rollout) runWave(ctx context.Context, w Wave, targets []target, resp *RolloutResponse, failures *int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		stopped bool
	)
	sem := make(chan struct{}, r.o.MaxParallel)
	report := func(t target, st Status, detail string, err error) {
		mu.Lock()
		switch st {
		case StatusWritten:
			resp.Written++
		case StatusUnchanged:
			resp.Unchanged++
		case StatusSkipped:
			resp.Skipped++
		case StatusDryRun:
			resp.DryRun++
		case StatusFailed:
			resp.Failed++
			*failures++
			if r.o.MaxFailures >= 0 && *failures > r.o.MaxFailures && !stopped {
				stopped = true
				cancel()
			}
		}
		mu.Unlock()
		if r.o.OnEvent != nil {
			r.o.OnEvent(Event{Wave: w.Index, ID: t.ID, Kind: t.Kind, Status: st, Detail: detail, Err: err})
		}
	}
	for _, t := range targets {
		if r.state != nil && r.state.results[t.ID].finished() {
			report(t, StatusSkipped, "", nil)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, detail, err := r.work(ctx, t)
			if err != nil {
				st = StatusFailed
				if ctx.Err() != nil {
					// Stopped mid-flight: neither done nor a failure of the
					// resource; a resumed run looks again.
					return
				}
			}
			if r.state != nil && st != StatusDryRun {
				rec := record{K: "result", ID: t.ID, Status: st, Wave: w.Index}
				if err != nil {
					rec.Error = err.Error()
				}
				if serr := r.state.append(rec); serr != nil && err == nil {
					st, err = StatusFailed, serr
				}
			}
			report(t, st, detail, err)
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if stopped {
		return fmt.Errorf("%w: %d failed in this run, limit %d", ErrTooManyFailures, *failures, r.o.MaxFailures)
	}
	return context.Cause(ctx)
}

// maxConflicts bounds the read-write rounds a resource gets when others
// change it between our read and our write (412).
const maxConflicts = 5

// target parses a target's id and returns the ARM client of its
// subscription.
func (c *Client) target(t target) (*azarm.ResourceID, *arm.Client, error) {
	rid, err := azarm.ParseResourceID(t.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: %s: %w", t.ID, err)
	}
	ac, err := c.arm(rid.SubscriptionID)
	return rid, ac, err
}

// applyOne brings one VM or scale set to the desired state.
func (c *Client) applyOne(ctx context.Context, t target, want Want, o RolloutOptions) (Status, string, error) {
	rid, ac, err := c.target(t)
	if err != nil {
		return StatusFailed, "", err
	}
	poll := &runtime.PollUntilDoneOptions{Frequency: o.PollFrequency}
	for range maxConflicts {
		var (
			settings *arm.ProxyAgentSettings
			etag     string
			ss       *arm.ScaleSet
		)
		if t.Kind == KindScaleSet {
			got, err := ac.GetScaleSet(ctx, rid.ResourceGroupName, rid.Name, nil)
			if err != nil {
				return StatusFailed, "", err
			}
			settings, etag, ss = got.ProxyAgentSettings(), etagOf(got.ETag), &got.ScaleSet
		} else {
			got, err := ac.GetVirtualMachine(ctx, rid.ResourceGroupName, rid.Name, nil)
			if err != nil {
				return StatusFailed, "", err
			}
			settings, etag = got.ProxyAgentSettings(), etagOf(got.ETag)
		}
		drift := want.Diff(settings)
		if o.DryRun {
			return dryRun(drift)
		}
		status, detail := StatusUnchanged, ""
		if drift.Change != nil {
			if etag == "" {
				return StatusFailed, "", fmt.Errorf("fleet: %s has no etag, refusing an unconditional write", t.ID)
			}
			err := c.patch(ctx, ac, rid, t.Kind, *drift.Change, etag, poll)
			if errors.Is(err, arm.ErrPreconditionFailed) {
				continue
			}
			if err != nil {
				return StatusFailed, "", err
			}
			status, detail = StatusWritten, differences(drift)
		}
		if ss != nil && ss.NeedsManualUpgrade() {
			n, err := c.upgradeOutdated(ctx, ac, rid, poll)
			if err != nil {
				return StatusFailed, detail, err
			}
			if n > 0 {
				status = StatusWritten
				detail = strings.TrimPrefix(detail+fmt.Sprintf("; manual upgrade of %d instances", n), "; ")
			}
		}
		return status, detail, nil
	}
	return StatusFailed, "", fmt.Errorf("fleet: %s changed under us %d times: %w", t.ID, maxConflicts, arm.ErrPreconditionFailed)
}

func (c *Client) patch(ctx context.Context, ac *arm.Client, rid *azarm.ResourceID, kind Kind, change arm.ProxyAgentSettings, etag string, poll *runtime.PollUntilDoneOptions) error {
	tag := azcore.ETag(etag)
	if kind == KindScaleSet {
		p, err := ac.BeginUpdateScaleSetSettings(ctx, rid.ResourceGroupName, rid.Name, change, &arm.ClientBeginUpdateScaleSetSettingsOptions{IfMatch: &tag})
		if err != nil {
			return err
		}
		_, err = p.PollUntilDone(ctx, poll)
		return arm.MapError(err)
	}
	p, err := ac.BeginUpdateVirtualMachineSettings(ctx, rid.ResourceGroupName, rid.Name, change, &arm.ClientBeginUpdateVirtualMachineSettingsOptions{IfMatch: &tag})
	if err != nil {
		return err
	}
	_, err = p.PollUntilDone(ctx, poll)
	return arm.MapError(err)
}

// upgradeChunk bounds the instance ids of one manual upgrade request.
const upgradeChunk = 100

// upgradeOutdated brings the instances of a Manual scale set that are not on
// the latest model to it, as arm.BeginManualUpgrade does for one call.
func (c *Client) upgradeOutdated(ctx context.Context, ac *arm.Client, rid *azarm.ResourceID, poll *runtime.PollUntilDoneOptions) (int, error) {
	var outdated []string
	pager := ac.NewListScaleSetInstancesPager(rid.ResourceGroupName, rid.Name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return 0, err
		}
		for _, inst := range page.Value {
			if p := inst.Properties; p != nil && p.LatestModelApplied != nil && !*p.LatestModelApplied {
				outdated = append(outdated, inst.InstanceID)
			}
		}
	}
	for i := 0; i < len(outdated); i += upgradeChunk {
		p, err := ac.BeginManualUpgrade(ctx, rid.ResourceGroupName, rid.Name, outdated[i:min(i+upgradeChunk, len(outdated))], nil)
		if err != nil {
			return i, err
		}
		if _, err := p.PollUntilDone(ctx, poll); err != nil {
			return i, arm.MapError(err)
		}
	}
	return len(outdated), nil
}

// resetOne resets the key of one VM or instance.
func (c *Client) resetOne(ctx context.Context, t target, st *stateFile, o RolloutOptions) (Status, string, error) {
	rid, ac, err := c.target(t)
	if err != nil {
		return StatusFailed, "", err
	}
	var cur int32
	if t.Kind == KindInstance {
		got, err := ac.GetScaleSetInstance(ctx, rid.ResourceGroupName, rid.Parent.Name, rid.Name, nil)
		if err != nil {
			return StatusFailed, "", err
		}
		cur = keyOf(got.ProxyAgentSettings())
	} else {
		got, err := ac.GetVirtualMachine(ctx, rid.ResourceGroupName, rid.Name, nil)
		if err != nil {
			return StatusFailed, "", err
		}
		cur = keyOf(got.ProxyAgentSettings())
	}
	if o.DryRun {
		return StatusDryRun, fmt.Sprintf("keyIncarnationId %d -> %d", cur, cur+1), nil
	}
	if st != nil {
		if began, ok := st.begun[t.ID]; ok && cur > began {
			return StatusUnchanged, fmt.Sprintf("keyIncarnationId already raised %d -> %d", began, cur), nil
		}
		if err := st.append(record{K: "begin", ID: t.ID, Key: &cur}); err != nil {
			return StatusFailed, "", err
		}
	}
	poll := &runtime.PollUntilDoneOptions{Frequency: o.PollFrequency}
	var prev, next int32
	if t.Kind == KindInstance {
		reset, err := ac.BeginResetScaleSetInstanceKey(ctx, rid.ResourceGroupName, rid.Parent.Name, rid.Name, nil)
		if err != nil {
			return StatusFailed, "", err
		}
		if _, err := reset.Poller.PollUntilDone(ctx, poll); err != nil {
			return StatusFailed, "", arm.MapError(err)
		}
		prev, next = reset.Previous, reset.KeyIncarnationID
	} else {
		reset, err := ac.BeginResetVirtualMachineKey(ctx, rid.ResourceGroupName, rid.Name, nil)
		if err != nil {
			return StatusFailed, "", err
		}
		if _, err := reset.Poller.PollUntilDone(ctx, poll); err != nil {
			return StatusFailed, "", arm.MapError(err)
		}
		prev, next = reset.Previous, reset.KeyIncarnationID
	}
	return StatusWritten, fmt.Sprintf("keyIncarnationId %d -> %d", prev, next), nil
}

func etagOf(e *azcore.ETag) string {
	if e == nil {
		return ""
	}
	return string(*e)
}

func keyOf(s *arm.ProxyAgentSettings) int32 {
	if s == nil || s.KeyIncarnationID == nil {
		return 0
	}
	return *s.KeyIncarnationID
}

func dryRun(d Drift) (Status, string, error) {
	if d.Change == nil {
		return StatusUnchanged, "", nil
	}
	body, err := PatchBody(*d.Change)
	if err != nil {
		return StatusFailed, "", err
	}
	return StatusDryRun, body, nil
}

// PatchBody renders the proxyAgentSettings part of the PATCH a change
// sends, as msp-fleet prints it in a dry run.
func PatchBody(change arm.ProxyAgentSettings) (string, error) {
	b, err := json.Marshal(map[string]any{"proxyAgentSettings": change})
	return string(b), err
}

func differences(d Drift) string {
	parts := make([]string, len(d.Differences))
	for i, x := range d.Differences {
		parts[i] = x.String()
	}
	return strings.Join(parts, ", ")
}
