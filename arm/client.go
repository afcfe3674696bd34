package arm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	goruntime "runtime"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

const (
	moduleName    = "github.com/metadatasec/gpa/arm"
	moduleVersion = "v0.1.0"
)

// Default API versions. Compute 2025-04-01 is the first with every
// proxyAgentSettings field except useLocalFileRules (2026-04-01); gallery
// 2024-03-03 introduced inVMAccessControlProfiles.
const (
	DefaultComputeAPIVersion = "2025-04-01"
	DefaultGalleryAPIVersion = "2024-03-03"
	// LocalFileRulesAPIVersion is the first compute API version that
	// accepts useLocalFileRules.
	LocalFileRulesAPIVersion = "2026-04-01"
)

// ClientOptions configures a Client. The zero value talks to public Azure.
type ClientOptions struct {
	// ClientOptions are azcore's ARM options: Cloud selects a sovereign
	// cloud, Transport, Retry and Logging work as in every Azure SDK client;
	// Telemetry.ApplicationID is sent before this module's User-Agent, and
	// Telemetry.Disabled sends none.
	// Leave ClientOptions.APIVersion empty: the client talks to two resource
	// providers with different versions; use the fields below.
	azarm.ClientOptions

	// ComputeAPIVersion is used for VMs and scale sets;
	// DefaultComputeAPIVersion when empty.
	ComputeAPIVersion string
	// GalleryAPIVersion is used for gallery profiles;
	// DefaultGalleryAPIVersion when empty.
	GalleryAPIVersion string
	// Logger receives debug records of retries (never bodies or tokens);
	// nil discards them.
	Logger *slog.Logger
}

// Client manages MSP settings of the VMs, scale sets and gallery profiles of
// one subscription. It is safe for concurrent use.
type Client struct {
	sub        string
	internal   *azarm.Client
	computeAPI string
	galleryAPI string
	log        *slog.Logger
}

// NewClient returns a client for subscriptionID authenticating with cred.
func NewClient(subscriptionID string, cred azcore.TokenCredential, options *ClientOptions) (*Client, error) {
	if strings.TrimSpace(subscriptionID) == "" {
		return nil, fmt.Errorf("arm: %w: empty subscription id", ErrInvalidRequest)
	}
	var o ClientOptions
	if options != nil {
		o = *options
	}
	if o.ClientOptions.APIVersion != "" {
		return nil, fmt.Errorf("arm: %w: set ComputeAPIVersion or GalleryAPIVersion, not ClientOptions.APIVersion", ErrInvalidRequest)
	}
	internal, err := azarm.NewClient(moduleName, moduleVersion, cred, withUserAgent(o.ClientOptions))
	if err != nil {
		return nil, fmt.Errorf("arm: new client: %w", err)
	}
	c := &Client{
		sub:        subscriptionID,
		internal:   internal,
		computeAPI: o.ComputeAPIVersion,
		galleryAPI: o.GalleryAPIVersion,
		log:        o.Logger,
	}
	if c.computeAPI == "" {
		c.computeAPI = DefaultComputeAPIVersion
	}
	if c.galleryAPI == "" {
		c.galleryAPI = DefaultGalleryAPIVersion
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// userAgent names this module and its version, where azcore's telemetry
// policy would name only the last path element ("azsdk-go-arm"), which
// reads as azcore's own arm package.
var userAgent = fmt.Sprintf("gpa-arm/%s (%s; %s; %s)", moduleVersion, goruntime.Version(), goruntime.GOOS, moduleName)

// withUserAgent replaces azcore's telemetry policy with one that sends
// userAgent, after Telemetry.ApplicationID when set, and nothing when the
// caller disabled telemetry. The caller's options are not modified.
func withUserAgent(o azarm.ClientOptions) *azarm.ClientOptions {
	if o.Telemetry.Disabled {
		return &o
	}
	ua := userAgent
	if id := o.Telemetry.ApplicationID; id != "" {
		ua = id + " " + ua
	}
	o.Telemetry.Disabled = true
	o.PerCallPolicies = append(slices.Clip(o.PerCallPolicies), userAgentPolicy(ua))
	return &o
}

// userAgentPolicy sets the User-Agent header, keeping one set by an earlier
// policy after it, as azcore's telemetry policy does.
type userAgentPolicy string

func (p userAgentPolicy) Do(req *policy.Request) (*http.Response, error) {
	h := req.Raw().Header
	ua := string(p)
	if prev := h.Get("User-Agent"); prev != "" {
		ua += " " + prev
	}
	h.Set("User-Agent", ua)
	return req.Next()
}

// SubscriptionID returns the subscription the client manages.
func (c *Client) SubscriptionID() string { return c.sub }

// resourcePath builds a Microsoft.Compute path below the resource group,
// escaping every segment. Alternating type/name pairs follow rg.
func (c *Client) resourcePath(rg string, typeNamePairs ...string) (string, error) {
	if strings.TrimSpace(rg) == "" {
		return "", fmt.Errorf("arm: %w: empty resource group name", ErrInvalidRequest)
	}
	var b strings.Builder
	b.WriteString("/subscriptions/")
	b.WriteString(url.PathEscape(c.sub))
	b.WriteString("/resourceGroups/")
	b.WriteString(url.PathEscape(rg))
	b.WriteString("/providers/Microsoft.Compute")
	for i, s := range typeNamePairs {
		if i%2 == 1 && strings.TrimSpace(s) == "" {
			return "", fmt.Errorf("arm: %w: empty %s name", ErrInvalidRequest, typeNamePairs[i-1])
		}
		b.WriteByte('/')
		if i%2 == 1 {
			b.WriteString(url.PathEscape(s))
		} else {
			b.WriteString(s)
		}
	}
	return b.String(), nil
}

type requestOptions struct {
	ifMatch azcore.ETag
	query   url.Values
}

func (c *Client) newRequest(ctx context.Context, method, path, apiVersion string, body any, ro *requestOptions) (*policy.Request, error) {
	req, err := runtime.NewRequest(ctx, method, runtime.JoinPaths(c.internal.Endpoint(), path))
	if err != nil {
		return nil, err
	}
	q := req.Raw().URL.Query()
	q.Set("api-version", apiVersion)
	if ro != nil {
		for k, vs := range ro.query {
			q[k] = vs
		}
		if ro.ifMatch != "" {
			req.Raw().Header.Set("If-Match", string(ro.ifMatch))
		}
	}
	req.Raw().URL.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	req.Raw().Header.Set("Accept", "application/json")
	if body != nil {
		if err := runtime.MarshalAsJSON(req, body); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// send runs req through the pipeline inside a span named api and turns a
// status outside codes into a mapped service error.
func (c *Client) send(ctx context.Context, api string, req *policy.Request, codes ...int) (resp *http.Response, err error) {
	_, end := runtime.StartSpan(ctx, api, c.internal.Tracer(), nil)
	defer func() { end(err) }()
	resp, err = c.internal.Pipeline().Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, codes...) {
		return nil, MapError(runtime.NewResponseError(resp))
	}
	return resp, nil
}

// call builds, sends and decodes one synchronous request.
func (c *Client) call(ctx context.Context, api, method, path, apiVersion string, body any, ro *requestOptions, out any, codes ...int) (*http.Response, error) {
	ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, api)
	req, err := c.newRequest(ctx, method, path, apiVersion, body, ro)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, api, req, codes...)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := runtime.UnmarshalAsJSON(resp, out); err != nil {
			return nil, fmt.Errorf("arm: %s: decode response: %w", api, err)
		}
	}
	return resp, nil
}

// begin starts an LRO or resumes it from a token.
func begin[T any](ctx context.Context, c *Client, api, resumeToken string, start func(ctx context.Context) (*http.Response, error)) (*runtime.Poller[T], error) {
	if resumeToken != "" {
		p, _, err := resumePoller[T](c, resumeToken)
		return p, err
	}
	ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, api)
	resp, err := start(ctx)
	if err != nil {
		return nil, err
	}
	return newPoller[T](c, resp, nil)
}

// startLRO sends the initial request of an LRO.
func (c *Client) startLRO(ctx context.Context, api, method, path, apiVersion string, body any, ro *requestOptions, codes ...int) (*http.Response, error) {
	req, err := c.newRequest(ctx, method, path, apiVersion, body, ro)
	if err != nil {
		return nil, err
	}
	return c.send(ctx, api, req, codes...)
}

// isNotFound reports a 404 from the service.
func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}
