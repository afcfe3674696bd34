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

// parsedResponse is what a test sees of a response: its head, its body and
// what is left on the connection after it.
type parsedResponse struct {
	Status        string
	Code          int
	Header        []msp.HeaderField
	ContentLength int64
	Chunked       bool
	Close         bool
	Body          string
	Rest          string
}

func parseAll(t *testing.T, method, wire string) (*parsedResponse, error) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(wire))
	resp, err := ReadResponse(br, method)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	rest, _ := io.ReadAll(br)
	return &parsedResponse{Status: resp.Status, Code: resp.Code, Header: resp.Header, ContentLength: resp.ContentLength,
		Chunked: resp.Chunked, Close: resp.Close, Body: string(body), Rest: string(rest)}, nil
}

func TestReadResponse(t *testing.T) {
	const next = "HTTP/1.1 204 No Content\r\n\r\n"
	hf := func(kv ...string) []msp.HeaderField {
		out := []msp.HeaderField{}
		for i := 0; i < len(kv); i += 2 {
			out = append(out, msp.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name, method, wire string
		want               *parsedResponse
		wantErr            error
	}{
		{name: "content-length", wire: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok" + next,
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Content-Type", "text/plain", "Content-Length", "2"),
				ContentLength: 2, Body: "ok", Rest: next}},
		{name: "spelling and order kept", wire: "HTTP/1.1 200 OK\r\nx-b: 1\r\nX-A:  two words \t\r\ncontent-length: 0\r\n\r\n",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("x-b", "1", "X-A", "two words", "content-length", "0")}},
		{name: "no reason phrase", wire: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
			want: &parsedResponse{Status: "200", Code: 200, Header: hf("Content-Length", "0")}},
		{name: "chunked with trailer", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n" + next,
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Transfer-Encoding", "chunked"),
				ContentLength: -1, Chunked: true, Body: "ok!!!", Rest: next}},
		{name: "chunked beats content-length and closes", wire: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Content-Length", "99", "Transfer-Encoding", "chunked"),
				ContentLength: -1, Chunked: true, Close: true, Body: "ok"}},
		{name: "to end of connection", wire: "HTTP/1.1 200 OK\r\n\r\nall of it",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf(), ContentLength: -1, Close: true, Body: "all of it"}},
		{name: "connection close", wire: "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Connection", "Keep-Alive, CLOSE", "Content-Length", "0"), Close: true}},
		{name: "HTTP/1.0 closes", wire: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Content-Length", "0"), Close: true}},
		{name: "HTTP/1.0 keep-alive", wire: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Connection", "keep-alive", "Content-Length", "0")}},
		{name: "HEAD has no body", method: "HEAD", wire: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + next,
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Content-Length", "10"), ContentLength: 10, Rest: next}},
		{name: "204 has no body", wire: "HTTP/1.1 204 No Content\r\n\r\n" + next,
			want: &parsedResponse{Status: "204 No Content", Code: 204, Header: hf(), ContentLength: -1, Rest: next}},
		{name: "1xx skipped", wire: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Content-Length", "1"), ContentLength: 1, Body: "x"}},
		{name: "equal content-lengths", wire: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
			want: &parsedResponse{Status: "200 OK", Code: 200, Header: hf("Content-Length", "1", "Content-Length", "1"), ContentLength: 1, Body: "x"}},

		{name: "101", wire: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", wantErr: ErrBadResponse},
		{name: "conflicting content-length", wire: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", wantErr: ErrBadResponse},
		{name: "signed content-length", wire: "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", wantErr: ErrBadResponse},
		{name: "negative content-length", wire: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantErr: ErrBadResponse},
		{name: "huge content-length", wire: "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", wantErr: ErrBadResponse},
		{name: "HTTP/1.0 chunked", wire: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", wantErr: ErrBadResponse},
		{name: "gzip transfer-encoding", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", wantErr: ErrBadResponse},
		{name: "HTTP/2", wire: "HTTP/2 200 OK\r\n\r\n", wantErr: ErrBadResponse},
		{name: "two-digit code", wire: "HTTP/1.1 20 OK\r\n\r\n", wantErr: ErrBadResponse},
		{name: "four-digit code", wire: "HTTP/1.1 2000 OK\r\n\r\n", wantErr: ErrBadResponse},
		{name: "control byte in reason", wire: "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n", wantErr: ErrBadResponse},
		{name: "code below 100", wire: "HTTP/1.1 099 Odd\r\n\r\n", wantErr: ErrBadResponse},
		{name: "folded header", wire: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", wantErr: ErrBadResponse},
		{name: "no colon", wire: "HTTP/1.1 200 OK\r\nX a\r\n\r\n", wantErr: ErrBadResponse},
		{name: "space before colon", wire: "HTTP/1.1 200 OK\r\nX : a\r\n\r\n", wantErr: ErrBadResponse},
		{name: "control byte", wire: "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", wantErr: ErrBadResponse},
		{name: "huge head", wire: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: "+strings.Repeat("a", 1000)+"\r\n", 300) + "\r\n", wantErr: ErrBadResponse},
		{name: "cut in head", wire: "HTTP/1.1 200 OK\r\nContent-Len", wantErr: io.ErrUnexpectedEOF},
		{name: "nothing", wire: "", wantErr: io.ErrUnexpectedEOF},
		{name: "short body", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", wantErr: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			got, err := parseAll(t, method, tc.wire)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// FuzzReadResponse: ReadResponse never panics, and wherever net/http's
// reader also accepts a response, both agree on the status code and the
// body.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX: 1\r\n\r\n",
		"HTTP/1.0 404 Not Found\r\n\r\ngone",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := ReadResponse(bufio.NewReader(bytes.NewReader(data)), "GET")
		if err != nil {
			return
		}
		body, berr := io.ReadAll(resp.Body)
		gr, gerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		if gerr != nil || gr.StatusCode < 200 {
			return // net/http leaves 1xx skipping to its caller
		}
		gbody, gberr := io.ReadAll(gr.Body)
		if gr.StatusCode != resp.Code {
			t.Fatalf("code %d, net/http %d", resp.Code, gr.StatusCode)
		}
		if berr == nil && gberr == nil && !bytes.Equal(body, gbody) {
			t.Fatalf("body %q, net/http %q", body, gbody)
		}
	})
}

// TestReadResponseIntoReuse: a reused Response keeps nothing of the one
// read into it before, and its body reads its own length.
func TestReadResponseIntoReuse(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 404 Not Found\r\nConnection: close, x-a\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nno" +
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	var resp Response
	if err := ReadResponseInto(br, "GET", &resp); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "no" {
		t.Fatalf("first body %q, %v", b, err)
	}
	if err := ReadResponseInto(br, "GET", &resp); err != nil {
		t.Fatal(err)
	}
	got := struct {
		Status string
		Code   int
		Header []msp.HeaderField
		CL     int64
		Close  bool
		Tokens []string
	}{resp.Status, resp.Code, resp.Header, resp.ContentLength, resp.Close, resp.ConnTokens}
	want := got
	want.Status, want.Code, want.Header, want.CL, want.Close, want.Tokens = "200 OK", 200,
		[]msp.HeaderField{{Name: "Content-Length", Value: "5"}}, 5, false, []string{}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("reused response (-want +got):\n%s", d)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "hello" {
		t.Errorf("second body %q, %v", b, err)
	}
}
