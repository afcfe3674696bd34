package msptest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Limits of the wire parser. They are generous for a metadata host and keep
// a broken client from making the test double allocate without bound.
const (
	maxHeadBytes = 64 << 10
	maxBodyBytes = 1 << 20
)

var (
	errHeadTooLarge = errors.New("request head too large")
	errBodyTooLarge = errors.New("request body too large")
)

// wireRequest is one request as it arrived: the request line's parts, the
// header lines in wire order with their names (and trailing spaces) as
// sent, and the decoded body.
type wireRequest struct {
	method string
	rawURI string
	proto  string
	header []msp.HeaderField
	body   []byte
}

func (r *wireRequest) get(name string) (string, bool) {
	m := msp.Message{Header: r.header}
	return m.Get(name)
}

func (r *wireRequest) path() string {
	p, _, _ := strings.Cut(r.rawURI, "?")
	return p
}

// readRequest reads one HTTP/1.x request from br. It returns io.EOF when the
// client closed the connection cleanly between requests.
func readRequest(br *bufio.Reader) (*wireRequest, error) {
	var lines []string
	total := 0
	for {
		line, err := br.ReadString('\n')
		total += len(line)
		if total > maxHeadBytes {
			return nil, errHeadTooLarge
		}
		if err != nil {
			if err == io.EOF && total == 0 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("reading request head: %w", err)
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if len(lines) == 0 {
				continue // RFC 9112 §2.2: ignore empty lines before the request line
			}
			break
		}
		lines = append(lines, line)
	}
	method, rest, ok1 := strings.Cut(lines[0], " ")
	rawURI, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || rawURI == "" || !strings.HasPrefix(proto, "HTTP/1.") {
		return nil, fmt.Errorf("malformed request line %q", lines[0])
	}
	req := &wireRequest{method: method, rawURI: rawURI, proto: proto}
	for _, l := range lines[1:] {
		if l[0] == ' ' || l[0] == '\t' {
			return nil, errors.New("obsolete header line folding")
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("malformed header line %q", l)
		}
		// Only leading whitespace is dropped, so a test can see a value's
		// trailing space (the agent's "Metadata: True "); the signature
		// trims both ends itself.
		req.header = append(req.header, msp.HeaderField{Name: name, Value: strings.TrimLeft(value, " \t")})
	}
	body, err := readBody(br, req)
	if err != nil {
		return nil, err
	}
	req.body = body
	return req, nil
}

func readBody(br *bufio.Reader, req *wireRequest) ([]byte, error) {
	if te, ok := req.get("Transfer-Encoding"); ok {
		if !strings.EqualFold(strings.TrimSpace(te), "chunked") {
			return nil, fmt.Errorf("unsupported transfer-encoding %q", te)
		}
		b, err := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), maxBodyBytes+1))
		if err != nil {
			return nil, fmt.Errorf("reading chunked body: %w", err)
		}
		if len(b) > maxBodyBytes {
			return nil, errBodyTooLarge
		}
		// Trailers end with an empty line; none are expected, so only the
		// final CRLF is consumed.
		if _, err := br.ReadString('\n'); err != nil {
			return nil, fmt.Errorf("reading chunked trailer: %w", err)
		}
		return b, nil
	}
	cl, ok := req.get("Content-Length")
	if !ok {
		return nil, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("bad content-length %q", cl)
	}
	if n > maxBodyBytes {
		return nil, errBodyTooLarge
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	return b, nil
}

// response is what a handler produces; writeResponse puts it on the wire.
type response struct {
	status int
	header http.Header
	body   []byte
	close  bool
}

func newResponse(status int, contentType string, body []byte) *response {
	r := &response{status: status, header: http.Header{}, body: body}
	if contentType != "" {
		r.header.Set("Content-Type", contentType)
	}
	return r
}

func writeResponse(w io.Writer, r *response) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", r.status, http.StatusText(r.status))
	r.header.Set("Content-Length", strconv.Itoa(len(r.body)))
	if r.close {
		r.header.Set("Connection", "close")
	}
	if err := r.header.Write(&b); err != nil {
		return err
	}
	b.WriteString("\r\n")
	b.Write(r.body)
	_, err := w.Write(b.Bytes())
	return err
}
