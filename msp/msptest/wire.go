package msptest

import (
	"bufio"
	"net/http"
	"strings"

	"github.com/metadatasec/gpa/internal/httpwire"
)

// maxBodyBytes bounds a request body. It is generous for a metadata host
// and keeps a broken client from making the test double allocate without
// bound; the head is bounded by httpwire's defaults.
const maxBodyBytes = 1 << 20

// wireRequest is one request as it arrived: the head as httpwire read it,
// with the header lines in wire order, their names and the spaces after
// their values as sent, and the decoded body.
type wireRequest struct {
	*httpwire.Request
	body []byte
}

func (r *wireRequest) path() string {
	p, _, _ := strings.Cut(r.URI, "?")
	return p
}

// readRequest reads one request from br with the guards the proxy applies
// to its clients, so a request the proxy would refuse is refused here too.
// It answers an Expect: 100-continue on w before reading the body. It
// returns io.EOF when the client closed the connection cleanly between
// requests, and a *httpwire.RequestError or httpwire.ErrBodyTooLarge for a
// request it refuses.
func readRequest(br *bufio.Reader, w *bufio.Writer) (*wireRequest, error) {
	// Only leading whitespace is dropped from values, so a test can see a
	// value's trailing space (the agent's "Metadata: True "); the
	// signature trims both ends itself.
	head, err := httpwire.ReadRequestHead(br, &httpwire.HeadOptions{RawValues: true})
	if err != nil {
		return nil, err
	}
	if head.Expect100 && head.HasBody() {
		w.WriteString(httpwire.Continue)
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	body, err := httpwire.ReadBody(br, head, maxBodyBytes, httpwire.DefaultMaxHeaderBytes)
	if err != nil {
		return nil, err
	}
	return &wireRequest{Request: head, body: body}, nil
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

// writeResponse writes r with its fields in http.Header.Write's order and
// a Content-Length, and flushes w.
func writeResponse(w *bufio.Writer, r *response) error {
	return httpwire.WriteResponse(w, r.status, httpwire.HeaderFields(r.header), r.body, r.close, false)
}
