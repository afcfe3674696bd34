package msp

import "time"

// Header names of the protocol, lowercase as they go on the wire.
const (
	HeaderAuthorization = "x-ms-azure-host-authorization"
	HeaderClaims        = "x-ms-azure-host-claims"
	HeaderDate          = "x-ms-azure-host-date"
	// ResponseMarker is the value the proxy puts in HeaderAuthorization on
	// every forwarded response, so a client can tell the response went
	// through the agent.
	ResponseMarker = "value"
	// AuthScheme is the only authorization scheme MSP defines.
	AuthScheme = "Azure-HMAC-SHA256"
)

// DateLayout is the RFC 1123 layout with a literal GMT zone, as the host
// sends and expects it.
const DateLayout = "Mon, 02 Jan 2006 15:04:05 GMT"

// FormatDate formats t as the RFC 1123 date the host expects in
// x-ms-azure-host-date: "Wed, 23 Apr 2025 12:00:00 GMT".
func FormatDate(t time.Time) string {
	return t.UTC().Format(DateLayout)
}

// AppendDate appends FormatDate(t) to b without allocating.
func AppendDate(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, DateLayout)
}

// ParseDate parses an x-ms-azure-host-date or Date header value.
func ParseDate(s string) (time.Time, error) {
	t, err := time.Parse(DateLayout, s)
	if err != nil {
		// Other RFC 1123 zones ("UTC", "+0000") are accepted too.
		if t2, err2 := time.Parse(time.RFC1123, s); err2 == nil {
			return t2.UTC(), nil
		}
		if t2, err2 := time.Parse(time.RFC1123Z, s); err2 == nil {
			return t2.UTC(), nil
		}
		return time.Time{}, err
	}
	return t.UTC(), nil
}
