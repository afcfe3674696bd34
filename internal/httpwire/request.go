package httpwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Defaults of HeadOptions.
const (
	DefaultMaxURIBytes    = 8 << 10
	DefaultMaxHeaderBytes = 32 << 10
	DefaultMaxHeaders     = 100
)

// HeadOptions bound what ReadRequestHead accepts. Zero fields take the
// defaults; a nil *HeadOptions is all defaults.
type HeadOptions struct {
	// MaxURIBytes bounds the request target; 414 beyond.
	MaxURIBytes int
	// MaxHeaderBytes bounds the head, request line included; 431 beyond.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header lines; 431 beyond.
	MaxHeaders int
	// RawValues keeps the whitespace after each field value, which RFC
	// 9112 §5 lets a recipient drop: a test double that records what a
	// client sent sets it. Values are checked the same either way.
	RawValues bool
	// HopByHop, if set, makes ReadRequestHead drop from Request.Header the
	// fields it reports true for and the fields the Connection header
	// names (Host excepted), as a proxy must before it forwards a request
	// (RFC 9110 §7.6.1). It is called with each name as sent.
	HopByHop func(name string) bool
}

// RequestError is a request refused before it is served. The connection
// must be closed after answering Status: after a framing error the byte
// stream can no longer be trusted.
type RequestError struct {
	// Status is the HTTP status to answer.
	Status int
	// Msg says what was wrong, for logs and audit records.
	Msg string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// Request is a request head as read by ReadRequestHead.
type Request struct {
	Method string
	// URI is the request target as received, until ToOriginForm turns
	// an absolute-form target into origin form.
	URI string
	// Proto is "HTTP/1.1" or "HTTP/1.0".
	Proto string
	// Authority is the host of an absolute-form target that ToOriginForm
	// converted, "" otherwise.
	Authority string
	// Header holds the field lines in wire order with names as sent,
	// framing fields included unless HeadOptions.HopByHop dropped them.
	Header []msp.HeaderField

	// ContentLength is the body's length, -1 when the body is chunked or
	// there is no Content-Length.
	ContentLength int64
	Chunked       bool
	HadCL         bool
	// Expect100 is set when an HTTP/1.1 client waits for "100 Continue"
	// before it sends the body.
	Expect100 bool
	// Close is set when the client asked to close after this request.
	Close bool
	// HeadBytes counts the bytes of the head.
	HeadBytes int
}

// HasBody reports whether the request announced a body.
func (r *Request) HasBody() bool { return r.Chunked || r.ContentLength > 0 }

// Get returns the value of the first field named name, in any case, as
// http.Header.Get does.
func (r *Request) Get(name string) (string, bool) { return get(r.Header, name) }

// ReadRequestHead reads and validates a request line and header block. A
// head it refuses gives a *RequestError; io.EOF means the client closed
// cleanly between requests; other errors are the connection's.
func ReadRequestHead(br *bufio.Reader, opts *HeadOptions) (*Request, error) {
	r := new(Request)
	if err := ReadRequestHeadInto(br, opts, r); err != nil {
		return nil, err
	}
	return r, nil
}

// ReadRequestHeadInto is ReadRequestHead into a Request the caller owns,
// which it overwrites: a server that reads many requests on a connection
// reuses one instead of allocating one per request.
func ReadRequestHeadInto(br *bufio.Reader, opts *HeadOptions, r *Request) error {
	var o HeadOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxURIBytes <= 0 {
		o.MaxURIBytes = DefaultMaxURIBytes
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxHeaders <= 0 {
		o.MaxHeaders = DefaultMaxHeaders
	}
	// Tolerate the empty lines RFC 9112 §2.2 allows before a request.
	var line []byte
	var err error
	for range 4 {
		line, err = readLine(br, o.MaxURIBytes+32)
		if err == ErrLineTooLong {
			return &RequestError{http.StatusRequestURITooLong, "request line too long"}
		}
		if err != nil {
			return err
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
		return &RequestError{http.StatusBadRequest, "malformed request line"}
	}
	if len(uri) > o.MaxURIBytes {
		return &RequestError{http.StatusRequestURITooLong, "request URI too long"}
	}
	if string(proto) != "HTTP/1.1" && string(proto) != "HTTP/1.0" {
		return &RequestError{http.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served"}
	}
	if !validToken(method) {
		return &RequestError{http.StatusBadRequest, "malformed method"}
	}
	for _, c := range uri {
		if c <= ' ' || c >= 0x7f {
			return &RequestError{http.StatusBadRequest, "request URI is not printable ASCII"}
		}
	}
	nm, nu := len(method), len(uri)
	// The fields of the request read into r before are gone with it;
	// their slice is reused.
	block, fields, used, err := readFields(br, line, len(line)+2,
		fieldRules{maxBytes: o.MaxHeaderBytes, maxFields: o.MaxHeaders, rawValues: o.RawValues}, clear0(r.Header))
	if err != nil {
		var fe fieldError
		if errors.As(err, &fe) {
			status := http.StatusBadRequest
			if fe == fieldLineTooLong || fe == fieldBlockTooLarge {
				status = http.StatusRequestHeaderFieldsTooLarge
			}
			return &RequestError{status, fe.Error()}
		}
		return err
	}
	*r = Request{Method: block[:nm], URI: block[nm+1 : nm+1+nu], Proto: block[nm+1+nu+1 : len(line)],
		Header: fields, ContentLength: -1, HeadBytes: used}
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

	if r.Proto == "HTTP/1.1" && len(hosts) != 1 {
		return &RequestError{http.StatusBadRequest, "want exactly one Host header"}
	}
	if len(hosts) > 1 {
		return &RequestError{http.StatusBadRequest, "more than one Host header"}
	}
	// Framing: a message with both Transfer-Encoding and Content-Length is
	// the classic smuggling vector, so it is refused instead of repaired.
	if len(tes) > 0 {
		if len(cls) > 0 {
			return &RequestError{http.StatusBadRequest, "both Transfer-Encoding and Content-Length"}
		}
		if r.Proto != "HTTP/1.1" || len(tes) != 1 || !strings.EqualFold(strings.TrimSpace(tes[0]), "chunked") {
			return &RequestError{http.StatusNotImplemented, "only a single chunked Transfer-Encoding is supported"}
		}
		r.Chunked = true
	}
	if len(cls) > 0 {
		for _, v := range cls[1:] {
			if v != cls[0] {
				return &RequestError{http.StatusBadRequest, "conflicting Content-Length headers"}
			}
		}
		n, ok := parseContentLength(strings.TrimSpace(cls[0]))
		if !ok {
			return &RequestError{http.StatusBadRequest, "invalid Content-Length"}
		}
		r.ContentLength, r.HadCL = n, true
	}
	if expect != "" {
		if !strings.EqualFold(strings.TrimSpace(expect), "100-continue") {
			return &RequestError{http.StatusExpectationFailed, "unsupported expectation"}
		}
		r.Expect100 = r.Proto == "HTTP/1.1"
	}
	// "close" wins over "keep-alive" in any order (RFC 9112 §9.3); an
	// HTTP/1.0 client keeps the connection only when it asks to.
	r.Close = HasToken(connTokens, "close") || r.Proto == "HTTP/1.0" && !HasToken(connTokens, "keep-alive")
	if o.HopByHop != nil {
		r.Header = dropHopByHop(r.Header, o.HopByHop, connTokens)
	}
	return nil
}

// dropHopByHop removes, in place, the fields hopByHop reports and the
// ones connTokens name, except Host.
func dropHopByHop(h []msp.HeaderField, hopByHop func(string) bool, connTokens []string) []msp.HeaderField {
	out := h[:0]
	for _, f := range h {
		if hopByHop(f.Name) || HasToken(connTokens, f.Name) && !strings.EqualFold(f.Name, "host") {
			continue
		}
		out = append(out, f)
	}
	return out
}

// ToOriginForm turns an absolute-form target "http://host[:port]/path"
// into origin form and records the host in Authority, so that a proxy can
// refuse requests for hosts other than the one the client connected to.
// An origin-form target is left alone; anything else ("*", CONNECT's
// authority form, other schemes) is refused with a 400 *RequestError.
func (r *Request) ToOriginForm() error {
	u := r.URI
	if strings.HasPrefix(u, "/") {
		return nil
	}
	if len(u) < 7 || !strings.EqualFold(u[:7], "http://") {
		return &RequestError{http.StatusBadRequest, "request target must be origin-form or an http URL"}
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
		return &RequestError{http.StatusBadRequest, "bad authority in request target"}
	}
	r.Authority, r.URI = authority, path
	return nil
}

// ErrBodyTooLarge is a request body over the reader's limit (413).
var ErrBodyTooLarge = errors.New("httpwire: request body too large")

// ReadBody reads r's whole body from br, at most limit bytes, and the
// trailer section of a chunked body, at most maxTrailer bytes. A body that
// announces or turns out more than limit gives ErrBodyTooLarge. It does
// not send "100 Continue": a caller that serves Expect100 writes it first.
func ReadBody(br *bufio.Reader, r *Request, limit int64, maxTrailer int) ([]byte, error) {
	if !r.HasBody() {
		return nil, nil
	}
	if !r.Chunked {
		if r.ContentLength > limit {
			return nil, ErrBodyTooLarge
		}
		buf := make([]byte, r.ContentLength)
		_, err := io.ReadFull(br, buf)
		return buf, err
	}
	// The chunked reader must read from br itself: given anything else it
	// adds its own buffer, which would swallow the trailers and the next
	// request.
	body, err := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, ErrBodyTooLarge
	}
	if err := ReadTrailers(br, maxTrailer); err != nil {
		return nil, err
	}
	return body, nil
}

// clear0 empties fields, dropping the strings they held, for reuse.
func clear0(fields []msp.HeaderField) []msp.HeaderField {
	clear(fields)
	return fields[:0]
}
