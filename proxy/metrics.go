package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// Metrics receives the proxy's measurements. The proxy calls it on the
// request path, so every method must be quick and safe for concurrent use.
// Package agent implements it with Prometheus series; the proxy itself
// stays free of any metrics library.
type Metrics interface {
	// RequestDone counts one request by the audit record's endpoint and
	// decision and the status the client got, with the time it took.
	RequestDone(endpoint, decision string, code int, elapsed time.Duration)
	// UpstreamError counts a failure talking to ep: "dial", "timeout",
	// "send", "response" or "body".
	UpstreamError(ep msp.Endpoint, kind string)
	// Epoch reports the epoch of the latch snapshot a request was handled
	// under.
	Epoch(epoch uint64)
	// ConnOpened and ConnClosed bracket every client connection served.
	ConnOpened()
	ConnClosed()
	// ConnRefused counts a client connection refused at the connection
	// limit.
	ConnRefused()
	// Panic counts a connection that ended in a recovered panic.
	Panic()
}

// noMetrics is the Metrics of a Config that sets none.
type noMetrics struct{}

func (noMetrics) RequestDone(string, string, int, time.Duration) {}
func (noMetrics) UpstreamError(msp.Endpoint, string)             {}
func (noMetrics) Epoch(uint64)                                   {}
func (noMetrics) ConnOpened()                                    {}
func (noMetrics) ConnClosed()                                    {}
func (noMetrics) ConnRefused()                                   {}
func (noMetrics) Panic()                                         {}

// statusLines holds "403 Forbidden" and the like, the audit record's
// responseStatus, so that a request does not build it.
var statusLines = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i) + " " + http.StatusText(i)
	}
	return s
}()

// statusLine returns "code reason" for the audit record.
func statusLine(c int) string {
	if c >= 0 && c < len(statusLines) {
		return statusLines[c]
	}
	return strconv.Itoa(c) + " " + http.StatusText(c)
}
