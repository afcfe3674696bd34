package proxy

import (
	"bufio"
	"strings"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// hopByHop are the header fields that describe one connection and are never
// forwarded, plus the MSP headers a client must never be able to supply.
var hopByHop = map[string]bool{
	"connection":            true,
	"keep-alive":            true,
	"proxy-connection":      true,
	"proxy-authenticate":    true,
	"proxy-authorization":   true,
	"te":                    true,
	"trailer":               true,
	"transfer-encoding":     true,
	"upgrade":               true,
	"content-length":        true, // regenerated from the body the proxy forwards
	"expect":                true, // answered by the proxy, which buffers the body
	msp.HeaderAuthorization: true,
	msp.HeaderClaims:        true,
	msp.HeaderDate:          true,
}

// readRequestHead reads into r and validates a client's request head with
// httpwire's guards, and makes it one the proxy can forward: the
// hop-by-hop fields, the ones the Connection header names and any MSP
// header the client tried to supply are dropped (the proxy alone sets
// those), and an absolute-form target becomes origin-form. A head it
// refuses gives a *httpwire.RequestError; io.EOF means the client closed
// cleanly between requests.
func readRequestHead(br *bufio.Reader, opts *httpwire.HeadOptions, r *httpwire.Request) (*httpwire.Request, error) {
	o := *opts
	o.HopByHop = isHopByHop
	if err := httpwire.ReadRequestHeadInto(br, &o, r); err != nil {
		return nil, err
	}
	// Targets of methods the pipeline refuses anyway (CONNECT's authority
	// form) are left alone, so they get upstream's 405 rather than a 400.
	if msp.MethodAllowed(r.Method) {
		if err := r.ToOriginForm(); err != nil {
			return nil, err
		}
	}
	// A fragment is the client's own and never reaches a server: hosts
	// drop it before they verify. Removed here, matching, signing and
	// forwarding all see the one target the host will.
	if i := strings.IndexByte(r.URI, '#'); i >= 0 {
		r.URI = r.URI[:i]
	}
	return r, nil
}

// isResponseHopByHop reports whether a field of the host's answer stays
// with the upstream connection. The host's own x-ms-azure-host-* fields
// (its date, its claims) are the caller's to see; only the authorization
// field is replaced by the proxy's marker.
func isResponseHopByHop(name string) bool {
	if strings.EqualFold(name, msp.HeaderClaims) || strings.EqualFold(name, msp.HeaderDate) {
		return false
	}
	return isHopByHop(name)
}

// isHopByHop reports whether name, in any case, is in hopByHop, without
// lowercasing it into a new string.
func isHopByHop(name string) bool {
	var buf [32]byte
	if len(name) > len(buf) {
		return false // no hop-by-hop name is that long
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return hopByHop[string(buf[:len(name)])]
}
