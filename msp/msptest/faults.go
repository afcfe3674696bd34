package msptest

import (
	"slices"
	"strings"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// FaultKind is a way the host can misbehave.
type FaultKind uint8

// The faults SetFault can inject.
const (
	// FaultNone is the zero value; a Request with it saw no fault.
	FaultNone FaultKind = iota
	// FaultDown closes every new connection to the endpoint as soon as it
	// is accepted, before anything is read: the client sees EOF or a reset.
	// Fault.Path is ignored.
	FaultDown
	// FaultSlow waits Fault.Delay before answering normally.
	FaultSlow
	// FaultStatus answers with Fault.Status (500 if zero) and a text body.
	FaultStatus
	// FaultMalformedJSON answers 200 with a truncated JSON document.
	FaultMalformedJSON
	// FaultWrongContentType answers normally but labels the body
	// text/xml, so a client that trusts Content-Type parses JSON as XML.
	FaultWrongContentType
	// FaultXMLBody answers 200 with an XML error document labelled
	// application/xml, as WireServer does when it is unhappy.
	FaultXMLBody
	// FaultDrop reads the request and closes the connection without
	// answering.
	FaultDrop
)

// String names the fault.
func (k FaultKind) String() string {
	switch k {
	case FaultDown:
		return "down"
	case FaultSlow:
		return "slow"
	case FaultStatus:
		return "status"
	case FaultMalformedJSON:
		return "malformed-json"
	case FaultWrongContentType:
		return "wrong-content-type"
	case FaultXMLBody:
		return "xml-body"
	case FaultDrop:
		return "drop"
	}
	return "none"
}

// Fault describes one injected failure.
type Fault struct {
	Kind FaultKind
	// Endpoint the fault applies to.
	Endpoint msp.Endpoint
	// Path, if set, limits the fault to requests whose path (the raw URI
	// without its query) equals it, for example "/secure-channel/status".
	Path string
	// PathPrefix, if set, limits the fault to requests whose path starts
	// with it, for example "/secure-channel/key/" for every attestation.
	PathPrefix string
	// Status is the answer of FaultStatus; 500 if zero.
	Status int
	// Delay is the wait of FaultSlow.
	Delay time.Duration
	// Count is how many matching requests (connections, for FaultDown) the
	// fault hits before it is used up; zero means until ClearFaults.
	Count int
}

// SetFault adds a fault. When several match a request, the one added first
// applies.
func (h *Host) SetFault(f Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, &f)
}

// ClearFaults removes every fault, so the host behaves again.
func (h *Host) ClearFaults() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = nil
}

// takeFaultLocked returns the fault that applies and uses one of its
// counts. atAccept selects FaultDown (checked when a connection is
// accepted) or every other kind (checked per request).
func (h *Host) takeFaultLocked(ep msp.Endpoint, path string, atAccept bool) *Fault {
	for i, f := range h.faults {
		if f.Endpoint != ep || (f.Kind == FaultDown) != atAccept {
			continue
		}
		if !atAccept && ((f.Path != "" && f.Path != path) || !strings.HasPrefix(path, f.PathPrefix)) {
			continue
		}
		out := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				h.faults = slices.Delete(h.faults, i, i+1)
			}
		}
		return &out
	}
	return nil
}
