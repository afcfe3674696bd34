package httpwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

var testLimits = HeadOptions{MaxURIBytes: 64, MaxHeaderBytes: 256, MaxHeaders: 6}

func hf(kv ...string) []msp.HeaderField {
	out := []msp.HeaderField{}
	for i := 0; i < len(kv); i += 2 {
		out = append(out, msp.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// TestReadRequestHead: the heads accepted and how they read, and every
// guard with the status it answers.
func TestReadRequestHead(t *testing.T) {
	raw := testLimits
	raw.RawValues = true
	hop := testLimits
	hop.HopByHop = func(name string) bool {
		return strings.EqualFold(name, "connection") || strings.EqualFold(name, "keep-alive")
	}
	for _, tc := range []struct {
		name, wire string
		opts       *HeadOptions
		want       *Request
		wantStatus int
		wantErr    error
	}{
		{name: "minimal", wire: "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			want: &Request{Method: "GET", URI: "/", Proto: "HTTP/1.1", Header: hf("Host", "x"),
				ContentLength: -1, HeadBytes: 25}},
		{name: "bare LF, empty lines first, spelling kept", wire: "\r\n\nPOST /a?b HTTP/1.1\nhost:  x \t\nX-A: 1\ncontent-length: 3\n\nabc",
			want: &Request{Method: "POST", URI: "/a?b", Proto: "HTTP/1.1", Header: hf("host", "x", "X-A", "1", "content-length", "3"),
				ContentLength: 3, HadCL: true, HeadBytes: 59}},
		{name: "raw values keep trailing space", wire: "GET / HTTP/1.1\r\nHost: x\r\nMetadata: True \r\n\r\n", opts: &raw,
			want: &Request{Method: "GET", URI: "/", Proto: "HTTP/1.1", Header: hf("Host", "x", "Metadata", "True "),
				ContentLength: -1, HeadBytes: 42}},
		{name: "chunked, expect, connection", wire: "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nExpect: 100-Continue\r\nConnection: keep-alive, X-A\r\n\r\n",
			want: &Request{Method: "PUT", URI: "/", Proto: "HTTP/1.1",
				Header:        hf("Host", "x", "Transfer-Encoding", "Chunked", "Expect", "100-Continue", "Connection", "keep-alive, X-A"),
				ContentLength: -1, Chunked: true, Expect100: true, HeadBytes: 104}},
		{name: "hop-by-hop dropped", wire: "GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: 1\r\nConnection: X-A, host\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n", opts: &hop,
			want: &Request{Method: "GET", URI: "/", Proto: "HTTP/1.1", Header: hf("Host", "x", "X-B", "3"), ContentLength: -1, HeadBytes: 87}},
		{name: "HTTP/1.0 without Host closes", wire: "GET / HTTP/1.0\r\n\r\n",
			want: &Request{Method: "GET", URI: "/", Proto: "HTTP/1.0", Header: hf(), ContentLength: -1, Close: true, HeadBytes: 16}},
		{name: "equal content-lengths", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
			want: &Request{Method: "POST", URI: "/", Proto: "HTTP/1.1", Header: hf("Host", "x", "Content-Length", "1", "Content-Length", "1"),
				ContentLength: 1, HadCL: true, HeadBytes: 64}},

		{name: "clean close", wire: "", wantErr: io.EOF},
		{name: "cut in head", wire: "GET / HTTP/1.1\r\nHost: x\r\n", wantErr: io.ErrUnexpectedEOF},
		{name: "CL and TE", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", wantStatus: 400},
		{name: "TE and CL", wire: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", wantStatus: 400},
		{name: "conflicting CL", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", wantStatus: 400},
		{name: "CL list", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n", wantStatus: 400},
		{name: "signed CL", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", wantStatus: 400},
		{name: "huge CL", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999\r\n\r\n", wantStatus: 400},
		{name: "gzip TE", wire: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", wantStatus: 501},
		{name: "two TE", wire: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", wantStatus: 501},
		{name: "HTTP/1.0 chunked", wire: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", wantStatus: 501},
		{name: "folded", wire: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", wantStatus: 400},
		{name: "space before colon", wire: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", wantStatus: 400},
		{name: "no colon", wire: "GET / HTTP/1.1\r\nHost x\r\n\r\n", wantStatus: 400},
		{name: "bare CR in value", wire: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", wantStatus: 400},
		{name: "NUL in value", wire: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", wantStatus: 400},
		{name: "obs-text in value", wire: "GET / HTTP/1.1\r\nHost: x\r\nX-A: \xe9\r\n\r\n", wantStatus: 400},
		{name: "no Host", wire: "GET / HTTP/1.1\r\n\r\n", wantStatus: 400},
		{name: "two Hosts", wire: "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", wantStatus: 400},
		{name: "two Hosts HTTP/1.0", wire: "GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "other expectation", wire: "GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", wantStatus: 417},
		{name: "HTTP/2", wire: "GET / HTTP/2.0\r\nHost: x\r\n\r\n", wantStatus: 505},
		{name: "lower-case version", wire: "GET / http/1.1\r\nHost: x\r\n\r\n", wantStatus: 505},
		{name: "request line without version", wire: "GET /\r\n\r\n", wantStatus: 400},
		{name: "double space", wire: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "bad method", wire: "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "control byte in URI", wire: "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
		{name: "URI too long", wire: "GET /" + strings.Repeat("a", 64) + " HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 414},
		{name: "request line too long", wire: "GET /" + strings.Repeat("a", 200) + " HTTP/1.1\r\n\r\n", wantStatus: 414},
		{name: "header line too long", wire: "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 300) + "\r\n\r\n", wantStatus: 431},
		{name: "head too large", wire: "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 50)+"\r\n", 5) + "\r\n", wantStatus: 431},
		{name: "too many fields", wire: "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X: 1\r\n", 6) + "\r\n", wantStatus: 431},
		{name: "only empty lines", wire: "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", wantStatus: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if opts == nil {
				opts = &testLimits
			}
			got, err := ReadRequestHead(bufio.NewReader(strings.NewReader(tc.wire)), opts)
			var re *RequestError
			switch {
			case tc.wantStatus != 0:
				if !errors.As(err, &re) || re.Status != tc.wantStatus {
					t.Fatalf("error %v, want a RequestError with status %d", err, tc.wantStatus)
				}
				return
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestToOriginForm(t *testing.T) {
	for _, tc := range []struct {
		uri, wantURI, wantAuthority string
		wantErr                     bool
	}{
		{uri: "/a?b", wantURI: "/a?b"},
		{uri: "http://169.254.169.254/metadata?x=1", wantURI: "/metadata?x=1", wantAuthority: "169.254.169.254"},
		{uri: "HTTP://h:80", wantURI: "/", wantAuthority: "h:80"},
		{uri: "http://h?q", wantURI: "/?q", wantAuthority: "h"},
		{uri: "*", wantErr: true},
		{uri: "h:443", wantErr: true},
		{uri: "https://h/", wantErr: true},
		{uri: "http:///x", wantErr: true},
		{uri: "http://u@h/", wantErr: true},
	} {
		r := &Request{URI: tc.uri}
		err := r.ToOriginForm()
		var re *RequestError
		if tc.wantErr {
			if !errors.As(err, &re) || re.Status != http.StatusBadRequest {
				t.Errorf("%q: %v, want a 400 RequestError", tc.uri, err)
			}
			continue
		}
		if err != nil || r.URI != tc.wantURI || r.Authority != tc.wantAuthority {
			t.Errorf("%q: %q %q %v, want %q %q", tc.uri, r.URI, r.Authority, err, tc.wantURI, tc.wantAuthority)
		}
	}
}

// TestReadBody: bodies by length and chunked, trailers consumed, the
// limit enforced either way, and the connection left at the next request.
func TestReadBody(t *testing.T) {
	const next = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name, wire, want string
		wantErr          error
	}{
		{name: "length", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + next, want: "hello"},
		{name: "none", wire: "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + next},
		{name: "chunked with trailers", wire: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n" + next, want: "hello"},
		{name: "length over limit", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nhellohell", wantErr: ErrBodyTooLarge},
		{name: "chunked over limit", wire: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhellohell\r\n0\r\n\r\n", wantErr: ErrBodyTooLarge},
		{name: "trailers over limit", wire: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + strings.Repeat("a", 100) + "\r\n\r\n", wantErr: ErrLineTooLong},
		{name: "short", wire: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel", wantErr: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.wire))
			r, err := ReadRequestHead(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := ReadBody(br, r, 8, 64)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(body) != tc.want {
				t.Fatalf("body %q, %v; want %q", body, err, tc.want)
			}
			if rest, _ := io.ReadAll(br); string(rest) != next {
				t.Errorf("left %q, want the next request", rest)
			}
		})
	}
}

// FuzzReadRequestHead: any input either fails or yields a head within the
// limits whose framing is unambiguous, and whose fields, written back with
// WriteRequestHead, read the same.
func FuzzReadRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\nHost: x\n\n",
		"\r\nGET * HTTP/1.0\r\nX: a\r\n b\r\n\r\n",
		"PUT /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\nConnection: close\r\n\r\n",
		"GET /\xff HTTP/1.1\r\nHost: x\r\nX-A: \t v \t\r\nX-B:\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadRequestHead(bufio.NewReader(bytes.NewReader(data)), &testLimits)
		if err != nil {
			return
		}
		if r.Chunked && r.HadCL {
			t.Fatalf("both chunked and Content-Length accepted")
		}
		if len(r.URI) > testLimits.MaxURIBytes || r.HeadBytes > testLimits.MaxHeaderBytes || len(r.Header) > testLimits.MaxHeaders {
			t.Fatalf("limits exceeded: uri %d, head bytes %d, fields %d", len(r.URI), r.HeadBytes, len(r.Header))
		}
		for _, h := range r.Header {
			if strings.ContainsAny(h.Value, "\r\n") || strings.ContainsAny(h.Name, "\r\n: ") {
				t.Fatalf("field %q: %q", h.Name, h.Value)
			}
		}
		if r.Proto != "HTTP/1.1" {
			return // WriteRequestHead writes HTTP/1.1, which needs a Host
		}
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		WriteRequestHead(w, r.Method, r.URI, r.Header)
		w.Flush()
		again, err := ReadRequestHead(bufio.NewReader(&b), &HeadOptions{})
		if err != nil {
			t.Fatalf("written back, the head is refused: %v\n%q", err, b.String())
		}
		if diff := cmp.Diff(r.Header, again.Header); diff != "" {
			t.Fatalf("written back, the fields differ (-first +again):\n%s", diff)
		}
	})
}

// TestReadRequestHeadIntoReuse: a reused Request keeps nothing of the
// request read into it before.
func TestReadRequestHeadIntoReuse(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: y\r\n\r\n"))
	var r Request
	if err := ReadRequestHeadInto(br, nil, &r); err != nil {
		t.Fatal(err)
	}
	if err := ReadRequestHeadInto(br, nil, &r); err != nil {
		t.Fatal(err)
	}
	want, err := ReadRequestHead(bufio.NewReader(strings.NewReader("GET /b HTTP/1.1\r\nHost: y\r\n\r\n")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, &r); d != "" {
		t.Errorf("reused request (-fresh +reused):\n%s", d)
	}
}
