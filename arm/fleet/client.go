package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resourcegraph/armresourcegraph"

	"github.com/metadatasec/gpa/arm"
)

// Options configures a Client; nil is fine.
type Options struct {
	// ClientOptions are azcore's ARM options, used for Resource Graph and
	// for ARM alike: Cloud selects the cloud (and, in tests, the endpoint),
	// Transport and Logging work as in every Azure SDK client. When
	// Retry.MaxRetries is zero the client retries up to 10 times, because a
	// fleet rollout meets throttling as a matter of course.
	azarm.ClientOptions
	// ComputeAPIVersion is passed to package arm; empty for its default.
	ComputeAPIVersion string
	// LowRemaining is the x-ms-ratelimit-remaining-* value at or below which
	// the client pauses all requests for LowRemainingPause. Default 5.
	LowRemaining int
	// LowRemainingPause defaults to 2s.
	LowRemainingPause time.Duration
	// Logger receives throttling pauses and rollout progress at debug and
	// info level; nil discards them.
	Logger *slog.Logger
}

// Client runs fleet queries and rollouts. It is safe for concurrent use.
type Client struct {
	graph *armresourcegraph.Client
	cred  azcore.TokenCredential
	armo  arm.ClientOptions
	log   *slog.Logger

	graphGate, armGate *gate

	mu   sync.Mutex
	arms map[string]*arm.Client
}

// NewClient returns a client authenticating with cred.
func NewClient(cred azcore.TokenCredential, options *Options) (*Client, error) {
	var o Options
	if options != nil {
		o = *options
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LowRemaining == 0 {
		o.LowRemaining = 5
	}
	if o.LowRemainingPause <= 0 {
		o.LowRemainingPause = 2 * time.Second
	}
	if o.Retry.MaxRetries == 0 {
		o.Retry.MaxRetries = 10
	}
	c := &Client{cred: cred, log: o.Logger, arms: map[string]*arm.Client{}}
	c.graphGate = &gate{name: "resource graph", low: o.LowRemaining, pause: o.LowRemainingPause, log: o.Logger}
	c.armGate = &gate{name: "resource manager", low: o.LowRemaining, pause: o.LowRemainingPause, log: o.Logger}

	gopts := o.ClientOptions
	gopts.PerRetryPolicies = append(append([]policy.Policy(nil), gopts.PerRetryPolicies...), c.graphGate)
	graph, err := armresourcegraph.NewClient(cred, &gopts)
	if err != nil {
		return nil, fmt.Errorf("fleet: resource graph client: %w", err)
	}
	c.graph = graph
	c.armo = arm.ClientOptions{ClientOptions: o.ClientOptions, ComputeAPIVersion: o.ComputeAPIVersion, Logger: o.Logger}
	c.armo.PerRetryPolicies = append(append([]policy.Policy(nil), o.PerRetryPolicies...), c.armGate)
	return c, nil
}

// arm returns the ARM client of a subscription, made once.
func (c *Client) arm(sub string) (*arm.Client, error) {
	key := strings.ToLower(sub)
	c.mu.Lock()
	defer c.mu.Unlock()
	if ac, ok := c.arms[key]; ok {
		return ac, nil
	}
	o := c.armo
	ac, err := arm.NewClient(sub, c.cred, &o)
	if err != nil {
		return nil, err
	}
	c.arms[key] = ac
	return ac, nil
}

// gate is a pipeline policy that holds every request of a client while the
// service asks for a pause, so that fifty workers wait together instead of
// each spending its retries on 429s.
type gate struct {
	name  string
	low   int
	pause time.Duration
	log   *slog.Logger

	mu    sync.Mutex
	until time.Time
}

// Do waits for the gate, sends the request and learns from the answer. A
// 429 is sent again here, after the pause the service asked for, up to
// maxThrottled times: azcore's retry policy gives up at once when
// Retry-After exceeds its MaxRetryDelay, which ARM's hour-long windows do.
func (g *gate) Do(req *policy.Request) (*http.Response, error) {
	ctx := req.Raw().Context()
	for attempt := 1; ; attempt++ {
		if err := g.wait(ctx); err != nil {
			return nil, err
		}
		resp, err := req.Next()
		if err != nil {
			return resp, err
		}
		g.observe(ctx, resp)
		if resp.StatusCode != http.StatusTooManyRequests || attempt >= maxThrottled {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err := req.RewindBody(); err != nil {
			return nil, err
		}
	}
}

// maxThrottled bounds the 429s one request absorbs in the gate.
const maxThrottled = 30

func (g *gate) wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		wait := time.Until(g.until)
		g.mu.Unlock()
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// observe turns throttling headers into a pause for everyone.
func (g *gate) observe(ctx context.Context, resp *http.Response) {
	h := resp.Header
	var d time.Duration
	reason := ""
	if resp.StatusCode == http.StatusTooManyRequests {
		d, reason = retryAfter(h), "429"
		if d == 0 {
			d = timeSpan(h.Get("x-ms-user-quota-resets-after"))
		}
		if d == 0 {
			d = g.pause
		}
	}
	if v := h.Get("x-ms-user-quota-remaining"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n <= 0 {
			if r := timeSpan(h.Get("x-ms-user-quota-resets-after")); r > d {
				d, reason = r, "x-ms-user-quota-remaining: 0"
			}
		}
	}
	for k, vs := range h {
		if !strings.HasPrefix(strings.ToLower(k), "x-ms-ratelimit-remaining-") || len(vs) == 0 {
			continue
		}
		if n, ok := lowestRemaining(vs[0]); ok && n <= g.low && g.pause > d {
			d, reason = g.pause, k+": "+vs[0]
		}
	}
	if d <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if until := time.Now().Add(d); until.After(g.until) {
		g.until = until
		g.log.DebugContext(ctx, "throttled, pausing requests", "service", g.name, "reason", reason, "pause", d)
	}
}

// lowestRemaining reads an x-ms-ratelimit-remaining-* value: a number
// (subscription reads and writes) or, as Compute sends in
// x-ms-ratelimit-remaining-resource, policies with their remaining calls,
// "Microsoft.Compute/PutVM3Min;239,Microsoft.Compute/PutVM30Min;1195", of
// which the lowest counts.
func lowestRemaining(v string) (int, bool) {
	low, found := 0, false
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if i := strings.LastIndexByte(part, ';'); i >= 0 {
			part = part[i+1:]
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			continue
		}
		if !found || n < low {
			low, found = n, true
		}
	}
	return low, found
}

// retryAfter reads the retry headers ARM uses, most precise first.
func retryAfter(h http.Header) time.Duration {
	for _, k := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if ms, err := strconv.ParseInt(h.Get(k), 10, 64); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// timeSpan parses .NET's TimeSpan as Resource Graph writes it
// ("00:00:05", "00:00:00.2500000"); 0 when it cannot.
func timeSpan(v string) time.Duration {
	parts := strings.Split(strings.TrimSpace(v), ":")
	if len(parts) != 3 {
		return 0
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	s, err3 := strconv.ParseFloat(parts[2], 64)
	if err1 != nil || err2 != nil || err3 != nil || h < 0 || m < 0 || s < 0 {
		return 0
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s*float64(time.Second))
}
