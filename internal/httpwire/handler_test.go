package httpwire

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestServeHandler: the handler sees the request as net/http's server
// would show it, and its answer comes back buffered.
func TestServeHandler(t *testing.T) {
	type seen struct {
		Method, Host, RequestURI, Path, Proto, RemoteAddr, Body string
		Header                                                  http.Header
		ContentLength                                           int64
	}
	var got seen
	var reqCtx context.Context
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = seen{r.Method, r.Host, r.RequestURI, r.URL.Path, r.Proto, r.RemoteAddr, string(b), r.Header, r.ContentLength}
		reqCtx = r.Context()
		w.Header().Set("X-A", "1")
		w.WriteHeader(http.StatusTeapot)
		w.WriteHeader(http.StatusOK) // ignored, as net/http does
		io.WriteString(w, "short and ")
		io.WriteString(w, "stout")
	})
	r, err := ReadRequestHead(bufio.NewReader(strings.NewReader("HEAD /x%2Fy?a=1 HTTP/1.1\r\nmetadata: true\r\nHost: 169.254.169.254\r\nContent-Length: 2\r\n\r\n")), nil)
	if err != nil {
		t.Fatal(err)
	}
	status, hdr, body, err := ServeHandler(t.Context(), h, r, &ServeOptions{Method: "GET", Body: []byte("hi"), RemoteAddr: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	want := seen{Method: "GET", Host: "169.254.169.254", RequestURI: "/x%2Fy?a=1", Path: "/x/y", Proto: "HTTP/1.1", RemoteAddr: "127.0.0.1:9",
		Body: "hi", Header: http.Header{"Metadata": {"true"}, "Content-Length": {"2"}}, ContentLength: 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("handler saw (-want +got)\n%s", diff)
	}
	if status != http.StatusTeapot || hdr.Get("X-A") != "1" || string(body) != "short and stout" {
		t.Errorf("answer %d %v %q", status, hdr, body)
	}
	if reqCtx.Err() == nil {
		t.Error("the request's context outlived the handler")
	}

	// HTTP/1.0 without Host: the default host; no WriteHeader: 200.
	r, err = ReadRequestHead(bufio.NewReader(strings.NewReader("GET / HTTP/1.0\r\n\r\n")), nil)
	if err != nil {
		t.Fatal(err)
	}
	status, _, _, err = ServeHandler(t.Context(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Host, got.Proto = r.Host, r.Proto
	}), r, &ServeOptions{DefaultHost: "127.0.0.1:80"})
	if err != nil || status != http.StatusOK || got.Host != "127.0.0.1:80" || got.Proto != "HTTP/1.0" {
		t.Errorf("HTTP/1.0: %d %v host %q proto %q", status, err, got.Host, got.Proto)
	}
}
