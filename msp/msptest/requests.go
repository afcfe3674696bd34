package msptest

import (
	"slices"
	"strings"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// Request records one request the host received (or one connection it
// refused under FaultDown, with Dropped set and nothing else known).
type Request struct {
	Endpoint msp.Endpoint
	Method   string
	// RawURI is the request target exactly as sent.
	RawURI string
	// Header lists the header lines as sent: wire order, names unchanged,
	// Host included.
	Header []msp.HeaderField
	Body   []byte
	// Signed reports that the request carried x-ms-azure-host-authorization.
	Signed bool
	// SignatureValid reports that the signature verified with a key the
	// host accepts: the latched key, or for key attestation the key being
	// attested.
	SignatureValid bool
	// SignatureError says why a signed request did not verify.
	SignatureError string
	// KeyGUID is the guid of the key that verified the signature, or of the
	// key issued by POST /secure-channel/key.
	KeyGUID string
	// SecureChannel marks requests to /secure-channel/*.
	SecureChannel bool
	// Status is the response status; 0 when no response was sent.
	Status int
	// Fault is the injected fault that hit the request, if any.
	Fault FaultKind
	// Dropped reports that the connection was closed without a response.
	Dropped bool
	// Time is the host clock when the request was read.
	Time time.Time
}

// Get returns the value of the last header line named name,
// case-insensitively.
func (r *Request) Get(name string) (string, bool) {
	m := msp.Message{Header: r.Header}
	return m.Get(name)
}

// Path returns RawURI without its query.
func (r *Request) Path() string {
	p, _, _ := strings.Cut(r.RawURI, "?")
	return p
}

func (h *Host) record(r Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = append(h.requests, r)
}

// Requests returns a copy of every request recorded so far, oldest first.
func (h *Host) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.requests)
}

// RequestsTo returns the recorded requests with the given method and path
// (RawURI without the query), oldest first.
func (h *Host) RequestsTo(method, path string) []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Request
	for _, r := range h.requests {
		if r.Method == method && r.Path() == path {
			out = append(out, r)
		}
	}
	return out
}

// ResetRequests forgets the recorded requests.
func (h *Host) ResetRequests() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = nil
}

// Telemetry returns the telemetry posts (POST /machine/?comp=telemetrydata
// to WireServer) the host accepted, oldest first: what left the guest.
// Each Body is one TelemetryData XML document.
func (h *Host) Telemetry() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Request
	for _, r := range h.requests {
		if r.Endpoint == msp.EndpointWireServer && r.Method == "POST" && strings.EqualFold(r.RawURI, "/machine/?comp=telemetrydata") &&
			r.Status >= 200 && r.Status < 300 {
			out = append(out, r)
		}
	}
	return out
}
