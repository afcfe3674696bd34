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

// MaxResponseHead bounds a response head. The metadata services and the
// agent answer with a few hundred bytes of header; a peer that sends more
// than this is not one of them.
const MaxResponseHead = 256 << 10

// ErrBadResponse marks a response that cannot be read faithfully.
var ErrBadResponse = errors.New("malformed HTTP response")

// Response is a response head and its body, as read by ReadResponse.
// Field names keep the sender's spelling and order, so a proxy can relay
// them as sent.
type Response struct {
	// Status is the code and reason as sent, "200 OK".
	Status string
	Code   int
	Header []msp.HeaderField

	// ContentLength is the body length from the head, -1 when the body is
	// chunked or runs to the end of the connection.
	ContentLength int64
	Chunked       bool
	// Close is set when the connection cannot carry another request
	// after this response: the peer said so, or the body ends with it.
	Close bool
	// ConnTokens are the Connection options: the fields they name are
	// hop-by-hop.
	ConnTokens []string
	// Body reads the body, and no further: after it returned io.EOF the
	// connection is at the next response. A body that ends before its
	// Content-Length or its last chunk gives io.ErrUnexpectedEOF.
	Body io.Reader

	connBuf [2]string // ConnTokens' storage for the usual one or two
	cl      lengthBody
}

// Get returns the value of the first field named name, in any case, as
// http.Header.Get does.
func (r *Response) Get(name string) (string, bool) { return get(r.Header, name) }

// ReadResponse reads a response to a request of method, skipping 1xx
// informational responses; 101 is refused, as nothing here does upgrades.
// It replaces http.ReadResponse where the head is only copied or read
// once: that one builds a header map and a dozen small objects per
// response. A response that breaks the rules of the package doc gives an
// error matching ErrBadResponse; one cut short gives io.ErrUnexpectedEOF.
func ReadResponse(br *bufio.Reader, method string) (*Response, error) {
	resp := new(Response)
	if err := ReadResponseInto(br, method, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// ReadResponseInto is ReadResponse into a Response the caller owns, which
// it overwrites: a client that reads many responses on a connection reuses
// one instead of allocating one per response.
func ReadResponseInto(br *bufio.Reader, method string, resp *Response) error {
	for {
		if err := readResponseHead(br, method, resp); err != nil {
			return err
		}
		switch {
		case resp.Code == http.StatusSwitchingProtocols:
			return fmt.Errorf("%w: switched protocols", ErrBadResponse)
		case resp.Code >= 200:
			return nil
		}
	}
}

func readResponseHead(br *bufio.Reader, method string, resp *Response) error {
	line, err := readLine(br, 1024)
	if err == ErrLineTooLong {
		return fmt.Errorf("%w: status line too long", ErrBadResponse)
	}
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	// "HTTP/1.1 200 OK"; the reason phrase may be empty or missing.
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[7] != '0' && line[7] != '1' ||
		line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return fmt.Errorf("%w: bad status line %q", ErrBadResponse, clipBytes(line))
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: bad status code %q", ErrBadResponse, clipBytes(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return fmt.Errorf("%w: bad status code %q", ErrBadResponse, clipBytes(line))
	}
	// The reason phrase goes back to a proxy's client as sent.
	for _, c := range line[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: control byte in status line %q", ErrBadResponse, clipBytes(line))
		}
	}
	http10 := line[7] == '0'
	hdr := resp.Header
	*resp = Response{Code: code, ContentLength: -1}
	resp.ConnTokens = resp.connBuf[:0]
	block, fields, _, err := readFields(br, line[9:], len(line),
		fieldRules{maxBytes: MaxResponseHead, maxFields: noFieldLimit, obsText: true}, clear0(hdr))
	if err != nil {
		var fe fieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("%w: %v", ErrBadResponse, fe)
		}
		return err
	}
	resp.Status, resp.Header = block[:len(line)-9], fields
	var cl, te string
	hasCL := false
	for _, f := range fields {
		name, value := f.Name, f.Value
		switch {
		case strings.EqualFold(name, "content-length"):
			if hasCL && value != cl {
				return fmt.Errorf("%w: conflicting Content-Length", ErrBadResponse)
			}
			cl, hasCL = value, true
		case strings.EqualFold(name, "transfer-encoding"):
			if te != "" {
				te += ","
			}
			te += value
		case strings.EqualFold(name, "connection"):
			resp.ConnTokens = appendConnTokens(resp.ConnTokens, value)
		}
	}
	resp.Close = HasToken(resp.ConnTokens, "close") || http10 && !HasToken(resp.ConnTokens, "keep-alive")

	noBody := method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
	switch {
	case te != "":
		// RFC 9112 §6.1: HTTP/1.0 has no transfer codings; net/http reads
		// such a body to the end of the connection, the framing is
		// ambiguous, and it is refused.
		if http10 {
			return fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 response", ErrBadResponse)
		}
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return fmt.Errorf("%w: unsupported Transfer-Encoding %q", ErrBadResponse, te)
		}
		// Chunked wins over a Content-Length (RFC 9112 §6.3), and the
		// message was ambiguous: this connection is not reused.
		resp.Chunked, resp.Close = !noBody, resp.Close || hasCL
	case hasCL:
		n, ok := parseContentLength(cl)
		if !ok {
			return fmt.Errorf("%w: invalid Content-Length %q", ErrBadResponse, cl)
		}
		resp.ContentLength = n
	}
	switch {
	case noBody:
		resp.Body = http.NoBody
	case resp.Chunked:
		resp.Body = &chunkedBody{br: br, cr: httputil.NewChunkedReader(br)}
	case resp.ContentLength >= 0:
		resp.cl = lengthBody{r: br, n: resp.ContentLength}
		resp.Body = &resp.cl
	default:
		// No framing: the body runs to the end of the connection.
		resp.Close = true
		resp.Body = br
	}
	return nil
}

// lengthBody reads a body of a known length, and reports a connection
// that ends before it.
type lengthBody struct {
	r io.Reader
	n int64
}

func (l *lengthBody) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if err == io.EOF {
		if l.n > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

// chunkedBody decodes a chunked body and consumes its trailer section, so
// the connection is positioned at the next response when it returns EOF.
type chunkedBody struct {
	br   *bufio.Reader
	cr   io.Reader
	done bool
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	n, err := c.cr.Read(p)
	if err == io.EOF {
		if terr := ReadTrailers(c.br, MaxResponseHead); terr != nil {
			if terr == io.EOF {
				terr = io.ErrUnexpectedEOF
			}
			return n, terr
		}
		c.done = true
	}
	return n, err
}

func clipBytes(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
