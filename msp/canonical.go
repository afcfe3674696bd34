package msp

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// CanonError is a canonicalisation failure with one of the stable codes of
// docs/protocol.md §4.7. errors.Is matches any CanonError with the same code, so
// callers test with the Err* sentinels below.
type CanonError struct {
	Code   string
	Detail string
}

// Error returns "msp: CODE: detail".
func (e *CanonError) Error() string {
	if e.Detail == "" {
		return "msp: " + e.Code
	}
	return "msp: " + e.Code + ": " + e.Detail
}

// Is reports whether target is a CanonError with the same code.
func (e *CanonError) Is(target error) bool {
	t, ok := target.(*CanonError)
	return ok && t.Code == e.Code
}

// The stable canonicalisation error codes, as sentinels.
var (
	ErrCanonScheme   = &CanonError{Code: "CANON_SCHEME"}
	ErrCanonMethod   = &CanonError{Code: "CANON_METHOD"}
	ErrCanonUserinfo = &CanonError{Code: "CANON_USERINFO"}
	ErrCanonPct      = &CanonError{Code: "CANON_PCT"}
	ErrCanonOverlong = &CanonError{Code: "CANON_OVERLONG"}
	ErrCanonUTF8     = &CanonError{Code: "CANON_UTF8"}
	ErrCanonNonASCII = &CanonError{Code: "CANON_NON_ASCII"}
	ErrCanonCtrl     = &CanonError{Code: "CANON_CTRL"}
	ErrCanonUnderflw = &CanonError{Code: "CANON_UNDERFLOW"}
	ErrCanonEmbQ     = &CanonError{Code: "CANON_EMBQ"}
	ErrCanonHost     = &CanonError{Code: "CANON_HOST"}
	ErrCanonPort     = &CanonError{Code: "CANON_PORT"}
)

func canonErr(code *CanonError, format string, args ...any) error {
	return &CanonError{Code: code.Code, Detail: fmt.Sprintf(format, args...)}
}

// CanonicalPath is a request path after the pipeline of §4.7: decoded once,
// ASCII-lowercased, matrix parameters and dot segments resolved. Segments
// always start with the root "".
type CanonicalPath struct {
	Segments      []string
	TrailingSlash bool
}

// String joins the segments with "/" ("/" for the root alone). The result
// is for display; use EscapedString for a request target.
func (p CanonicalPath) String() string {
	if len(p.Segments) <= 1 {
		return "/"
	}
	s := strings.Join(p.Segments, "/")
	if p.TrailingSlash {
		s += "/"
	}
	return s
}

// EscapedString is String with '%', space and '#' escaped, so that
// canonicalising it again yields the same path.
func (p CanonicalPath) EscapedString() string {
	if len(p.Segments) <= 1 {
		return "/"
	}
	var b strings.Builder
	for _, seg := range p.Segments[1:] {
		b.WriteByte('/')
		appendEscaped(&b, seg, "% #?;")
	}
	if p.TrailingSlash {
		b.WriteByte('/')
	}
	return b.String()
}

func appendEscaped(b *strings.Builder, s, special string) {
	const hexd = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || strings.IndexByte(special, c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
			continue
		}
		b.WriteByte(c)
	}
}

// HasPrefix reports whether q starts with p segment by segment, so /metadata
// is a prefix of /metadata/identity but not of /metadata-attacker.
func (p CanonicalPath) HasPrefix(prefix CanonicalPath) bool {
	if len(prefix.Segments) > len(p.Segments) {
		return false
	}
	for i, s := range prefix.Segments {
		if p.Segments[i] != s {
			return false
		}
	}
	return true
}

// CanonicalizePath runs a raw (still percent-encoded) path through the
// segment-aware, decode-once, fail-closed pipeline of §4.7.
func CanonicalizePath(raw string) (CanonicalPath, error) {
	return appendCanonicalPath(make([]string, 0, 8), raw)
}

// appendCanonicalPath is CanonicalizePath with the segments stored in
// dst's array, so the evaluator can keep them on its stack. dst must be
// empty: the ".." and trailing-slash rules count segments from its start.
func appendCanonicalPath(dst []string, raw string) (CanonicalPath, error) {
	dec, err := decodeOnce(raw, false)
	if err != nil {
		return CanonicalPath{}, err
	}
	if err := checkDecodedUTF8(dec); err != nil {
		return CanonicalPath{}, err
	}
	for i := 0; i < len(dec); i++ {
		if c := dec[i]; c < 0x20 || c == 0x7f {
			return CanonicalPath{}, canonErr(ErrCanonCtrl, "byte 0x%02x in path", c)
		}
	}
	for i := 0; i < len(dec); i++ {
		if dec[i] >= 0x80 {
			return CanonicalPath{}, canonErr(ErrCanonNonASCII, "non-ASCII path")
		}
	}
	if strings.IndexByte(dec, '?') >= 0 {
		return CanonicalPath{}, canonErr(ErrCanonEmbQ, "encoded '?' in path")
	}
	dec = asciiLower(dec)
	segs := append(dst, "")
	rest := dec
	for rest != "" {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 1 {
				return CanonicalPath{}, canonErr(ErrCanonUnderflw, "'..' above the root")
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
	}
	return CanonicalPath{
		Segments:      segs,
		TrailingSlash: len(raw) > 1 && strings.HasSuffix(raw, "/") && len(segs) > 1,
	}, nil
}

// CanonicalQuery is a query after the pipeline of §4.7: keys and values
// decoded once ('+' is a space) and ASCII-lowercased, empty keys dropped,
// values kept in order per key.
type CanonicalQuery map[string][]string

// String renders the query with sorted keys, escaped so that canonicalising
// it again yields the same query.
func (q CanonicalQuery) String() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			appendEscaped(&b, k, "%&=+ #")
			if v != "" {
				b.WriteByte('=')
				appendEscaped(&b, v, "%&=+ #")
			}
		}
	}
	return b.String()
}

// CanonicalizeQuery runs a raw query (without the '?') through §4.7's query
// pipeline. Non-ASCII values are allowed; malformed escapes, invalid UTF-8
// and control characters are not.
func CanonicalizeQuery(raw string) (CanonicalQuery, error) {
	var buf [8]queryPair
	pairs, err := appendQueryPairs(buf[:0], raw)
	if err != nil {
		return nil, err
	}
	q := CanonicalQuery{}
	for _, p := range pairs {
		q[p.key] = append(q[p.key], p.value)
	}
	return q, nil
}

// queryPair is one canonical key and value, in request order.
type queryPair struct{ key, value string }

// appendQueryPairs is CanonicalizeQuery without the map: the evaluator
// matches every request against it, and building a map per request was the
// largest allocation on that path.
func appendQueryPairs(dst []queryPair, raw string) ([]queryPair, error) {
	for raw != "" {
		var piece string
		piece, raw, _ = strings.Cut(raw, "&")
		if piece == "" {
			continue
		}
		k, v, _ := strings.Cut(piece, "=")
		dk, err := decodeQueryPart(k)
		if err != nil {
			return nil, err
		}
		dv, err := decodeQueryPart(v)
		if err != nil {
			return nil, err
		}
		if dk == "" {
			continue
		}
		dst = append(dst, queryPair{asciiLower(dk), asciiLower(dv)})
	}
	return dst, nil
}

func decodeQueryPart(s string) (string, error) {
	d, err := decodeOnce(s, true)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(d) {
		return "", canonErr(ErrCanonUTF8, "invalid UTF-8 in query")
	}
	for _, r := range d {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", canonErr(ErrCanonCtrl, "control character in query")
		}
	}
	return d, nil
}

// decodeOnce percent-decodes s exactly once. A truncated or non-hex escape is
// CANON_PCT. plusSpace turns '+' into ' ' (query form).
func decodeOnce(s string, plusSpace bool) (string, error) {
	n := strings.IndexByte(s, '%')
	if n < 0 && (!plusSpace || strings.IndexByte(s, '+') < 0) {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", canonErr(ErrCanonPct, "bad escape at offset %d", i)
			}
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case c == '+' && plusSpace:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// checkDecodedUTF8 separates overlong encodings (a classic way to smuggle
// '/' or '.' past a filter) from other invalid UTF-8.
func checkDecodedUTF8(s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x80 {
			i++
			continue
		}
		if isOverlongAt(s, i) {
			return canonErr(ErrCanonOverlong, "overlong UTF-8 at offset %d", i)
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return canonErr(ErrCanonUTF8, "invalid UTF-8 at offset %d", i)
		}
		i += size
	}
	return nil
}

func isOverlongAt(s string, i int) bool {
	c := s[i]
	if c == 0xc0 || c == 0xc1 {
		return true
	}
	if i+1 >= len(s) {
		return false
	}
	n := s[i+1]
	return (c == 0xe0 && n >= 0x80 && n < 0xa0) || (c == 0xf0 && n >= 0x80 && n < 0x90)
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// CanonicalRequest is the canonical form of a request, used for matching
// only: the proxy always forwards and signs the original bytes.
type CanonicalRequest struct {
	Method string
	Path   CanonicalPath
	Query  CanonicalQuery
}

// String renders the request target of the canonical form.
func (r *CanonicalRequest) String() string {
	s := r.Path.EscapedString()
	if q := r.Query.String(); q != "" {
		s += "?" + q
	}
	return s
}

// AllowedMethods is the method allow-list of §4.3.
var AllowedMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}

// MethodAllowed reports whether method is on the allow-list (exact case, as
// HTTP methods are case-sensitive).
func MethodAllowed(method string) bool {
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH":
		return true
	}
	return false
}

// Canonicalize canonicalises a request target in origin form ("/p?q") or
// absolute form ("http://host/p?q"). Absolute forms are checked for scheme
// and userinfo; the host itself is classified by ClassifyAuthority.
func Canonicalize(method, rawURI string) (*CanonicalRequest, error) {
	path, rawQuery, err := canonicalTarget(make([]string, 0, 8), method, rawURI)
	if err != nil {
		return nil, err
	}
	query, err := CanonicalizeQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	return &CanonicalRequest{Method: method, Path: path, Query: query}, nil
}

// CheckTarget reports whether a request target has a canonical form, the
// error Canonicalize would give, without building that form: a proxy that
// refuses uncanonicalisable targets under every matcher checks each request
// with it, and on a metadata-sized target it allocates nothing.
func CheckTarget(method, rawURI string) error {
	var segs [16]string
	var qbuf [8]queryPair
	_, rawQuery, err := canonicalTarget(segs[:0], method, rawURI)
	if err != nil {
		return err
	}
	_, err = appendQueryPairs(qbuf[:0], rawQuery)
	return err
}

// canonicalTarget checks method and the target's form, and returns the
// canonical path, its segments stored in segs' array (segs must be empty),
// and the raw query, which the caller canonicalises into the form it needs.
func canonicalTarget(segs []string, method, rawURI string) (CanonicalPath, string, error) {
	if !MethodAllowed(method) {
		return CanonicalPath{}, "", canonErr(ErrCanonMethod, "method %q", method)
	}
	target := rawURI
	if !strings.HasPrefix(target, "/") && target != "" {
		scheme, rest, ok := strings.Cut(target, "://")
		if !ok || !strings.EqualFold(scheme, "http") {
			return CanonicalPath{}, "", canonErr(ErrCanonScheme, "only origin-form or http:// targets")
		}
		auth := rest
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			auth, target = rest[:i], rest[i:]
		} else {
			target = "/"
		}
		if strings.IndexByte(auth, '@') >= 0 {
			return CanonicalPath{}, "", canonErr(ErrCanonUserinfo, "userinfo in authority")
		}
		if strings.HasPrefix(target, "?") {
			target = "/" + target
		}
	}
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	p, q, _ := strings.Cut(target, "?")
	path, err := appendCanonicalPath(segs, p)
	if err != nil {
		return CanonicalPath{}, "", err
	}
	return path, q, nil
}

// ClassifyAuthority maps a URL authority ("host[:port]") to the endpoint it
// names, accepting every IPv4 spelling a resolver would (decimal, octal, hex,
// one to four parts) and IPv4-mapped IPv6 in brackets. Hostnames are
// EndpointNone. Userinfo, malformed hosts and ports are CanonErrors.
func ClassifyAuthority(authority string) (Endpoint, netip.AddrPort, error) {
	if strings.IndexByte(authority, '@') >= 0 {
		return EndpointNone, netip.AddrPort{}, canonErr(ErrCanonUserinfo, "userinfo in authority")
	}
	host, port := authority, uint16(80)
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return EndpointNone, netip.AddrPort{}, canonErr(ErrCanonHost, "unclosed '['")
		}
		rest := host[end+1:]
		host = host[1:end]
		if rest != "" {
			if rest[0] != ':' {
				return EndpointNone, netip.AddrPort{}, canonErr(ErrCanonHost, "junk after ']'")
			}
			p, err := parsePort(rest[1:])
			if err != nil {
				return EndpointNone, netip.AddrPort{}, err
			}
			port = p
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return EndpointNone, netip.AddrPort{}, canonErr(ErrCanonHost, "bad IPv6 literal")
		}
		ap := netip.AddrPortFrom(a.Unmap(), port)
		return Classify(ap), ap, nil
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		p, err := parsePort(host[i+1:])
		if err != nil {
			return EndpointNone, netip.AddrPort{}, err
		}
		host, port = host[:i], p
	}
	if host == "" {
		return EndpointNone, netip.AddrPort{}, canonErr(ErrCanonHost, "empty host")
	}
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	if isNumericLabel(labels[len(labels)-1]) {
		a, err := parseInetAton(labels)
		if err != nil {
			return EndpointNone, netip.AddrPort{}, err
		}
		ap := netip.AddrPortFrom(a, port)
		return Classify(ap), ap, nil
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return EndpointNone, netip.AddrPort{}, canonErr(ErrCanonHost, "invalid hostname character %q", c)
		}
	}
	return EndpointNone, netip.AddrPort{}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 80, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, canonErr(ErrCanonPort, "port %q", s)
	}
	return uint16(n), nil
}

func isNumericLabel(s string) bool {
	if s == "" {
		return false
	}
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		s = s[2:]
		for i := 0; i < len(s); i++ {
			if !isHex(s[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseInetAton parses 1–4 numeric parts as inet_aton does: each part
// decimal, 0x-hex or 0-octal, the last part filling the remaining bytes.
func parseInetAton(parts []string) (netip.Addr, error) {
	if len(parts) > 4 {
		return netip.Addr{}, canonErr(ErrCanonHost, "too many parts")
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
			base, p = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, p = 8, p[1:]
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return netip.Addr{}, canonErr(ErrCanonHost, "bad IPv4 part")
		}
		vals[i] = v
	}
	var ip uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 255 {
			return netip.Addr{}, canonErr(ErrCanonHost, "IPv4 part %d over 255", i)
		}
		ip |= v << (24 - 8*uint(i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*uint(5-len(vals))) {
		return netip.Addr{}, canonErr(ErrCanonHost, "last IPv4 part out of range")
	}
	ip |= last
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), nil
}
