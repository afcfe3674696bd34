package proxy

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

// maxResponseHead bounds a host's response head. The metadata services
// answer with a few hundred bytes of header; a host that sends more than
// this is not one.
const maxResponseHead = 256 << 10

// errBadResponse marks a host response the proxy cannot relay faithfully.
var errBadResponse = errors.New("malformed response from host")

// response is a host response head and its body, read by readResponse.
// Field names keep the host's spelling and order, so the client sees them
// as the host sent them.
type response struct {
	status string // code and reason as sent, "200 OK"
	code   int
	header []msp.HeaderField

	// contentLength is the body length from the head, -1 when the body
	// is chunked or runs to the end of the connection.
	contentLength int64
	chunked       bool
	// close is true when the connection cannot carry another request
	// after this response: the host said so, or the body ends with it.
	close bool
	// connTokens are the host's Connection options: the fields they name
	// are hop-by-hop and not relayed.
	connTokens []string
	connBuf    [2]string // connTokens' storage for the usual one or two
	body       io.Reader
	lr         io.LimitedReader
}

// readResponse reads a response head, skipping 1xx informational
// responses; 101 is refused because the proxy does not do upgrades. It
// replaces http.ReadResponse on the request path: that one builds a header
// map and a dozen small objects per response, a tenth of the proxy's
// allocations, for a head the proxy only copies.
func readResponse(br *bufio.Reader, method string) (*response, error) {
	for {
		resp, err := readResponseHead(br, method)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.code == http.StatusSwitchingProtocols:
			return nil, fmt.Errorf("%w: host switched protocols", errBadResponse)
		case resp.code >= 200:
			return resp, nil
		}
	}
}

func readResponseHead(br *bufio.Reader, method string) (*response, error) {
	line, err := readLine(br, 1024)
	if err == errLineTooLong {
		return nil, fmt.Errorf("%w: status line too long", errBadResponse)
	}
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	// "HTTP/1.1 200 OK"; the reason phrase may be empty or missing.
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[7] != '0' && line[7] != '1' ||
		line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return nil, fmt.Errorf("%w: bad status line %q", errBadResponse, clipBytes(line))
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("%w: bad status code %q", errBadResponse, clipBytes(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil, fmt.Errorf("%w: bad status code %q", errBadResponse, clipBytes(line))
	}
	// The reason phrase goes back to the client as sent.
	for _, c := range line[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, fmt.Errorf("%w: control byte in status line %q", errBadResponse, clipBytes(line))
		}
	}
	http10 := line[7] == '0'
	resp := &response{code: code, contentLength: -1}
	resp.connTokens = resp.connBuf[:0]
	block, fields, _, err := readFields(br, line[9:], len(line), maxResponseHead, noFieldLimit, true)
	if err != nil {
		var fe fieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%w: %v", errBadResponse, fe)
		}
		return nil, err
	}
	resp.status, resp.header = block[:len(line)-9], fields
	var cl, te string
	hasCL := false
	for _, f := range fields {
		name, value := f.Name, f.Value
		switch {
		case strings.EqualFold(name, "content-length"):
			if hasCL && value != cl {
				return nil, fmt.Errorf("%w: conflicting Content-Length", errBadResponse)
			}
			cl, hasCL = value, true
		case strings.EqualFold(name, "transfer-encoding"):
			if te != "" {
				te += ","
			}
			te += value
		case strings.EqualFold(name, "connection"):
			resp.connTokens = appendConnTokens(resp.connTokens, value)
		}
	}
	resp.close = namedIn(resp.connTokens, "close") || http10 && !namedIn(resp.connTokens, "keep-alive")

	noBody := method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
	switch {
	case te != "":
		// RFC 9112 §6.1: HTTP/1.0 has no transfer codings; net/http reads
		// such a body to the end of the connection, the framing is
		// ambiguous, and the proxy refuses it.
		if http10 {
			return nil, fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 response", errBadResponse)
		}
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return nil, fmt.Errorf("%w: unsupported Transfer-Encoding %q", errBadResponse, te)
		}
		// Chunked wins over a Content-Length (RFC 9112 §6.3), and the
		// message was ambiguous: this connection is not reused.
		resp.chunked, resp.close = !noBody, resp.close || hasCL
	case hasCL:
		n, ok := parseContentLength(cl)
		if !ok {
			return nil, fmt.Errorf("%w: invalid Content-Length %q", errBadResponse, cl)
		}
		resp.contentLength = n
	}
	switch {
	case noBody:
		resp.body = http.NoBody
	case resp.chunked:
		resp.body = &chunkedBody{br: br, cr: httputil.NewChunkedReader(br)}
	case resp.contentLength >= 0:
		resp.lr = io.LimitedReader{R: br, N: resp.contentLength}
		resp.body = &resp.lr
	default:
		// No framing: the body runs to the end of the connection.
		resp.close = true
		resp.body = br
	}
	return resp, nil
}

// parseContentLength accepts only plain decimal digits (RFC 9110 §8.6),
// at most 18 of them so that the value cannot overflow; request and
// response heads share it.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
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
		if terr := readTrailers(c.br, maxResponseHead); terr != nil {
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
