package httpwire

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
)

// ServeOptions complete the request ServeHandler builds. A nil
// *ServeOptions is the zero value.
type ServeOptions struct {
	// Method replaces the head's method when set, so that a HEAD can be
	// answered with the head of a GET.
	Method string
	// Body is the request's body, already read.
	Body []byte
	// RemoteAddr is the client's address, for http.Request.RemoteAddr.
	RemoteAddr string
	// DefaultHost is http.Request.Host when the head has no Host field
	// (HTTP/1.0).
	DefaultHost string
}

// ServeHandler runs h for the request head r and returns the handler's
// answer, buffered: the status (200 when the handler set none), its header
// and its body. The handler sees the request as net/http's server would
// show it: Host in http.Request.Host and not in the header, the target in
// RequestURI and URL. The request's context is ctx, and ends when the
// handler returns. An error means r's target is not a URL a handler can
// be given; answer 400.
func ServeHandler(ctx context.Context, h http.Handler, r *Request, opts *ServeOptions) (int, http.Header, []byte, error) {
	var o ServeOptions
	if opts != nil {
		o = *opts
	}
	method := r.Method
	if o.Method != "" {
		method = o.Method
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var body io.Reader = http.NoBody
	if len(o.Body) > 0 {
		body = bytes.NewReader(o.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, method, r.URI, body)
	if err != nil {
		return 0, nil, nil, err
	}
	hr.Proto = r.Proto
	hr.ProtoMajor, hr.ProtoMinor = 1, 1
	if r.Proto == "HTTP/1.0" {
		hr.ProtoMinor = 0
	}
	hr.RequestURI = r.URI
	hr.RemoteAddr = o.RemoteAddr
	hr.Host = o.DefaultHost
	if r.Authority != "" {
		hr.Host = r.Authority
	}
	for _, f := range r.Header {
		if strings.EqualFold(f.Name, "Host") {
			if r.Authority == "" {
				hr.Host = f.Value
			}
			continue
		}
		hr.Header.Add(f.Name, f.Value)
	}
	rec := &recorder{header: make(http.Header)}
	h.ServeHTTP(rec, hr)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.status, rec.header, rec.body, nil
}

// recorder is the http.ResponseWriter ServeHandler hands a handler.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	r.body = append(r.body, p...)
	return len(p), nil
}
