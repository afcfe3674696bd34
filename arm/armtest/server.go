package armtest

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Audience is the token audience the server's cloud configuration names.
const Audience = "https://management.core.windows.net/"

// Options configures a Server; nil is fine.
type Options struct {
	// LROPolls is how many operation-status reads report InProgress before
	// an operation ends. Default 1.
	LROPolls int
	// PageSize is the number of items per list page. Default 100.
	PageSize int
	// GuestAutoLatch makes the simulated guest agent report the resource's
	// keyIncarnationId and modes in the instance view whenever an update
	// operation on a VM or scale-set instance succeeds.
	GuestAutoLatch bool
}

// Request is one request the server received.
type Request struct {
	Method string
	// Path is the URL path as sent.
	Path   string
	Query  url.Values
	Header http.Header
	// Body is the request body; nil when there was none.
	Body []byte
}

// APIVersion returns the api-version query parameter.
func (r Request) APIVersion() string { return r.Query.Get("api-version") }

// Server is an in-memory fake of the ARM endpoints for MSP settings: VMs,
// scale sets and their instances, gallery inVMAccessControlProfiles and
// versions, and the operation-status resources of their LROs. It validates
// writes as the service does and answers with ARM error bodies. It serves TLS
// on loopback only. All methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, https://127.0.0.1:port.
	URL string

	ts *httptest.Server

	mu                 sync.Mutex
	opts               Options
	res                map[string]*resource
	ops                map[string]*operation
	reqs               []Request
	seq                int
	throttle           int
	retryAfter         time.Duration
	failNextOp         *ServiceError
	failNextReq        *ServiceError
	unregistered       map[string]bool
	unsupportedRegions map[string]bool
	fleet              fleetState // graph.go
}

// ServiceError is an ARM error the server answers with.
type ServiceError struct {
	// Method, when set, limits FailNextRequest to requests with this method.
	Method  string
	Status  int
	Code    string
	Message string
	Target  string
}

// NewServer starts a fake on loopback with TLS. Close it when done.
func NewServer(options *Options) *Server {
	s := &Server{
		res:                map[string]*resource{},
		ops:                map[string]*operation{},
		unregistered:       map[string]bool{},
		unsupportedRegions: map[string]bool{},
	}
	if options != nil {
		s.opts = *options
	}
	if s.opts.LROPolls <= 0 {
		s.opts.LROPolls = 1
	}
	if s.opts.PageSize <= 0 {
		s.opts.PageSize = 100
	}
	s.ts = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.ts.Close() }

// ClientOptions returns azcore options that point an ARM client at the
// server, trust its certificate, skip RP registration and retry quickly.
func (s *Server) ClientOptions() azarm.ClientOptions {
	return azarm.ClientOptions{
		ClientOptions: policy.ClientOptions{
			Cloud: cloud.Configuration{Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: s.URL, Audience: Audience},
			}},
			Transport: s.ts.Client(),
			Retry:     policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
		},
		DisableRPRegistration: true,
	}
}

// Requests returns a copy of every request received so far, in order,
// including operation-status polls.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// SetLROPolls changes how many polls later operations take.
func (s *Server) SetLROPolls(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.LROPolls = max(n, 0)
}

// Throttle answers the next n requests with 429 and Retry-After.
func (s *Server) Throttle(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle, s.retryAfter = n, retryAfter
}

// FailNextOperation makes the next LRO the server starts end as Failed with
// this error (Status is ignored).
func (s *Server) FailNextOperation(code, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNextOp = &ServiceError{Code: code, Message: message}
}

// FailNextRequest answers the next request other than an operation-status
// poll (with e.Method, if set) with this error.
func (s *Server) FailNextRequest(e ServiceError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNextReq = &e
}

// SetFeatureRegistered says whether the subscription is registered for the
// ProxyAgent feature; subscriptions are registered unless told otherwise.
func (s *Server) SetFeatureRegistered(subscriptionID string, registered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregistered[strings.ToLower(subscriptionID)] = !registered
}

// SetRegionSupported says whether MSP can be enabled in region; every region
// is supported unless told otherwise.
func (s *Server) SetRegionSupported(region string, supported bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsupportedRegions[normRegion(region)] = !supported
}
