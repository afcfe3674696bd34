package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// httpError is a request the proxy refuses before it reaches the pipeline.
// It always closes the connection: after a framing error the byte stream can
// no longer be trusted.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, http.StatusText(e.status), e.msg)
}

var errLineTooLong = errors.New("line too long")

// request is one parsed client request. header keeps the client's header
// lines in wire order, minus the framing and hop-by-hop fields, which the
// proxy regenerates itself.
type request struct {
	method string
	uri    string // origin-form target, as received (or converted from absolute-form)
	proto  string // "HTTP/1.1" or "HTTP/1.0"
	host   string // authority of an absolute-form target, "" for origin-form
	header []msp.HeaderField

	contentLength int64 // -1 when the body is chunked or absent
	chunked       bool
	hadCL         bool
	expect100     bool
	close         bool // the client asked to close after this request
	headerBytes   int
}

// wireLimits bound what a client may send.
type wireLimits struct {
	maxURI         int
	maxHeaderBytes int
	maxHeaders     int
}

// readLine reads one line terminated by LF (CRLF or bare LF) without the
// terminator, refusing lines longer than max.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var out []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(out)+len(frag) > max+2 {
			return nil, errLineTooLong
		}
		if err == bufio.ErrBufferFull {
			out = append(out, frag...)
			continue
		}
		if err != nil {
			if err == io.EOF && len(out)+len(frag) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if out == nil {
			out = frag
		} else {
			out = append(out, frag...)
		}
		out = out[:len(out)-1]
		if n := len(out); n > 0 && out[n-1] == '\r' {
			out = out[:n-1]
		}
		return out, nil
	}
}

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

// readRequestHead reads and validates a request line and header block. A
// nil error with a nil request never happens; io.EOF means the client
// closed cleanly between requests.
func readRequestHead(br *bufio.Reader, lim wireLimits) (*request, error) {
	// Tolerate the empty lines RFC 9112 §2.2 allows before a request.
	var line []byte
	var err error
	for range 4 {
		line, err = readLine(br, lim.maxURI+32)
		if err == errLineTooLong {
			return nil, &httpError{http.StatusRequestURITooLong, "request line too long"}
		}
		if err != nil {
			return nil, err
		}
		if len(line) > 0 {
			break
		}
	}
	// Checked as bytes and kept as substrings of the field block, which
	// readFields starts with the line: one string for the whole head.
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	uri, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(uri) == 0 || bytes.IndexByte(proto, ' ') >= 0 {
		return nil, &httpError{http.StatusBadRequest, "malformed request line"}
	}
	if len(uri) > lim.maxURI {
		return nil, &httpError{http.StatusRequestURITooLong, "request URI too long"}
	}
	if string(proto) != "HTTP/1.1" && string(proto) != "HTTP/1.0" {
		return nil, &httpError{http.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served"}
	}
	if !validToken(method) {
		return nil, &httpError{http.StatusBadRequest, "malformed method"}
	}
	for _, c := range uri {
		if c <= ' ' || c >= 0x7f {
			return nil, &httpError{http.StatusBadRequest, "request URI is not printable ASCII"}
		}
	}
	nm, nu := len(method), len(uri)
	block, fields, used, err := readFields(br, line, len(line)+2, lim.maxHeaderBytes, lim.maxHeaders, false)
	if err != nil {
		var fe fieldError
		if errors.As(err, &fe) {
			status := http.StatusBadRequest
			if fe == fieldLineTooLong || fe == fieldBlockTooLarge {
				status = http.StatusRequestHeaderFieldsTooLarge
			}
			return nil, &httpError{status, fe.Error()}
		}
		return nil, err
	}
	r := &request{method: block[:nm], uri: block[nm+1 : nm+1+nu], proto: block[nm+1+nu+1 : len(line)],
		contentLength: -1, headerBytes: used}
	var (
		hostBuf, clBuf, teBuf, connBuf [2]string
		hosts, cls, tes, connTokens    = hostBuf[:0], clBuf[:0], teBuf[:0], connBuf[:0]
		expect                         string
	)
	for _, f := range fields {
		name, value := f.Name, f.Value
		switch {
		case strings.EqualFold(name, "host"):
			hosts = append(hosts, value)
		case strings.EqualFold(name, "content-length"):
			cls = append(cls, value)
		case strings.EqualFold(name, "transfer-encoding"):
			tes = append(tes, value)
		case strings.EqualFold(name, "connection"):
			connTokens = appendConnTokens(connTokens, value)
		case strings.EqualFold(name, "expect"):
			expect = value
		}
	}
	r.header = fields

	if r.proto == "HTTP/1.1" && len(hosts) != 1 {
		return nil, &httpError{http.StatusBadRequest, "want exactly one Host header"}
	}
	if len(hosts) > 1 {
		return nil, &httpError{http.StatusBadRequest, "more than one Host header"}
	}
	// Framing: a message with both Transfer-Encoding and Content-Length is
	// the classic smuggling vector, so it is refused instead of repaired.
	if len(tes) > 0 {
		if len(cls) > 0 {
			return nil, &httpError{http.StatusBadRequest, "both Transfer-Encoding and Content-Length"}
		}
		if r.proto != "HTTP/1.1" || len(tes) != 1 || !strings.EqualFold(tes[0], "chunked") {
			return nil, &httpError{http.StatusNotImplemented, "only a single chunked Transfer-Encoding is supported"}
		}
		r.chunked = true
	}
	if len(cls) > 0 {
		for _, v := range cls[1:] {
			if v != cls[0] {
				return nil, &httpError{http.StatusBadRequest, "conflicting Content-Length headers"}
			}
		}
		n, ok := parseContentLength(cls[0])
		if !ok {
			return nil, &httpError{http.StatusBadRequest, "invalid Content-Length"}
		}
		r.contentLength, r.hadCL = n, true
	}
	if expect != "" {
		if !strings.EqualFold(expect, "100-continue") {
			return nil, &httpError{http.StatusExpectationFailed, "unsupported expectation"}
		}
		r.expect100 = r.proto == "HTTP/1.1"
	}
	// "close" wins over "keep-alive" in any order (RFC 9112 §9.3); an
	// HTTP/1.0 client keeps the connection only when it asks to.
	r.close = namedIn(connTokens, "close") || r.proto == "HTTP/1.0" && !namedIn(connTokens, "keep-alive")
	// Drop hop-by-hop fields, the ones the Connection header names, and any
	// MSP header the client tried to supply: the proxy alone sets those.
	r.header = stripHeaders(r.header, connTokens)

	// Targets of methods the pipeline refuses anyway (CONNECT's authority
	// form) are left alone, so they get upstream's 405 rather than a 400.
	if !strings.HasPrefix(r.uri, "/") && msp.MethodAllowed(r.method) {
		if err := r.absoluteToOrigin(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func stripHeaders(h []msp.HeaderField, connTokens []string) []msp.HeaderField {
	out := h[:0]
	for _, f := range h {
		if isHopByHop(f.Name) || namedIn(connTokens, f.Name) && !strings.EqualFold(f.Name, "host") {
			continue
		}
		out = append(out, f)
	}
	return out
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

// appendConnTokens appends the options of a Connection field value,
// trimmed and without empty ones, in the case the sender used.
func appendConnTokens(tokens []string, value string) []string {
	for t := range strings.SplitSeq(value, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	return tokens
}

// namedIn reports whether tokens (Connection options) name the field
// name.
func namedIn(tokens []string, name string) bool {
	for _, t := range tokens {
		if strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// absoluteToOrigin turns "http://host[:port]/path" into origin form and
// records the authority, so the pipeline can refuse requests for hosts other
// than the caller's original destination. Anything else ("*", CONNECT's
// authority form, other schemes) is refused.
func (r *request) absoluteToOrigin() error {
	u := r.uri
	if len(u) < 7 || !strings.EqualFold(u[:7], "http://") {
		return &httpError{http.StatusBadRequest, "request target must be origin-form or an http URL"}
	}
	rest := u[7:]
	i := strings.IndexAny(rest, "/?")
	authority, path := rest, "/"
	if i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if strings.HasPrefix(path, "?") {
		path = "/" + path
	}
	if authority == "" || strings.Contains(authority, "@") {
		return &httpError{http.StatusBadRequest, "bad authority in request target"}
	}
	r.host, r.uri = authority, path
	return nil
}

func validToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// readTrailers consumes the trailer section after the last chunk. Trailers
// are dropped: they would arrive after the signature was computed.
func readTrailers(br *bufio.Reader, max int) error {
	total := 0
	for {
		line, err := readLine(br, max)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		total += len(line)
		if total > max {
			return errLineTooLong
		}
	}
}

// fieldError is why a header section was refused.
type fieldError int

const (
	fieldLineTooLong fieldError = iota + 1
	fieldBlockTooLarge
	fieldFolded
	fieldMalformed
	fieldBadValue
)

func (e fieldError) Error() string {
	switch e {
	case fieldLineTooLong:
		return "header line too long"
	case fieldBlockTooLarge:
		return "header block too large"
	case fieldFolded:
		return "obsolete header line folding"
	case fieldMalformed:
		return "malformed header line"
	case fieldBadValue:
		return "header value is not visible ASCII"
	}
	return "bad header section"
}

// noFieldLimit is readFields' maxFields for a head bounded by its size
// alone.
const noFieldLimit = math.MaxInt

// readFields reads the field lines of a request or response head up to
// the empty line. They are copied into one buffer, after prefix, that
// becomes one string, and names and values are substrings of it: one
// allocation for the whole section instead of two or three per field.
// used counts the head's bytes read so far against maxBytes; a block of
// maxFields fields or more is refused too, and the new count is returned.
// obsText allows bytes 0x80 and above in values, as responses may carry
// them.
func readFields(br *bufio.Reader, prefix []byte, used, maxBytes, maxFields int, obsText bool) (string, []msp.HeaderField, int, error) {
	type span struct{ name, value, end int }
	var (
		spanBuf [24]span
		spans   = spanBuf[:0]
		arena   = append(make([]byte, 0, 512), prefix...)
	)
	for {
		line, err := readLine(br, maxBytes)
		if err == errLineTooLong {
			return "", nil, 0, fieldLineTooLong
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", nil, 0, err
		}
		if len(line) == 0 {
			break
		}
		if used += len(line) + 2; used > maxBytes || len(spans) >= maxFields {
			return "", nil, 0, fieldBlockTooLarge
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "", nil, 0, fieldFolded
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validToken(line[:colon]) {
			return "", nil, 0, fieldMalformed
		}
		value := bytes.Trim(line[colon+1:], " \t")
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f || c > 0x7f && !obsText {
				return "", nil, 0, fieldBadValue
			}
		}
		sp := span{name: len(arena)}
		arena = append(arena, line[:colon]...)
		sp.value = len(arena)
		arena = append(arena, value...)
		sp.end = len(arena)
		spans = append(spans, sp)
	}
	block := string(arena)
	fields := make([]msp.HeaderField, len(spans))
	for i, sp := range spans {
		fields[i] = msp.HeaderField{Name: block[sp.name:sp.value], Value: block[sp.value:sp.end]}
	}
	return block, fields, used, nil
}
