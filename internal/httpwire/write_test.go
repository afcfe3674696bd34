package httpwire

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteResponse(t *testing.T) {
	for _, tc := range []struct {
		name            string
		status          int
		body            string
		closeConn, head bool
		want            string
	}{
		{name: "body", status: 200, body: "ok", want: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		{name: "close", status: 404, closeConn: true, want: "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{name: "head", status: 200, body: "ok", head: true, want: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"},
	} {
		var b bytes.Buffer
		if err := WriteResponse(bufio.NewWriter(&b), tc.status, hf("Content-Type", "text/plain"), []byte(tc.body), tc.closeConn, tc.head); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, b.String(), tc.want)
		}
	}
}

func TestWriteRequestHead(t *testing.T) {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	WriteRequestHead(w, "GET", "/a?b", hf("host", "x", "Metadata", "True "))
	w.Flush()
	if want := "GET /a?b HTTP/1.1\r\nhost: x\r\nMetadata: True \r\n\r\n"; b.String() != want {
		t.Errorf("%q, want %q", b.String(), want)
	}
}

// TestHeaderFields: sorted as http.Header.Write sorts, without the
// framing fields WriteResponse sets, without names that are not tokens,
// and without line breaks that would add lines.
func TestHeaderFields(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", "99")
	h.Set("Connection", "keep-alive")
	h["Transfer-Encoding"] = []string{"chunked"}
	h.Add("X-B", "2")
	h.Add("X-B", "3")
	h.Set("Allow", "GET")
	h["Bad Name"] = []string{"x"}
	h.Set("X-Split", "a\r\nX-Evil: 1")
	want := hf("Allow", "GET", "Content-Type", "text/plain", "X-B", "2", "X-B", "3", "X-Split", "a X-Evil: 1")
	if diff := cmp.Diff(want, HeaderFields(h)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
