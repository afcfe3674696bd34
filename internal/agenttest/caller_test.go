package agenttest

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The caller's side of the protocol, against a loopback server: what it
// reports for answers, refusals and raw heads a Go client would not send.
func TestRunCaller(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no metadata header", http.StatusBadRequest)
			return
		}
		w.Write([]byte("hello"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	type got struct {
		Status int
		Body   string
		HasErr bool
	}
	helloSHA := sha256Hex([]byte("hello"))
	tests := []struct {
		name string
		spec callerSpec
		want []got
	}{
		{"get", callerSpec{Op: "get", URL: srv.URL + "/x", Header: map[string]string{"Metadata": "true"}}, []got{{200, helloSHA, false}}},
		{"get without header", callerSpec{Op: "get", URL: srv.URL + "/x"}, []got{{400, sha256Hex([]byte("no metadata header\n")), false}}},
		{"get refused", callerSpec{Op: "get", URL: "http://" + refused + "/"}, []got{{0, "", true}}},
		{"raw", callerSpec{Op: "raw", Addr: addr, Requests: []string{
			"GET /a HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
			"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
			"GET /%2e%2e/a HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n",
		}}, []got{{200, helloSHA, false}, {400, sha256Hex([]byte("no metadata header\n")), false}, {200, helloSHA, false}}},
		{"loop", callerSpec{Op: "loop", URL: srv.URL, Header: map[string]string{"Metadata": "true"}, Count: 3}, []got{{200, helloSHA, false}, {200, helloSHA, false}, {200, helloSHA, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := json.Marshal(tt.spec)
			var out bytes.Buffer
			if code := runCaller(bytes.NewReader(in), &out); code != 0 {
				t.Fatalf("exit %d: %s", code, out.Bytes())
			}
			var res []Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			var gots []got
			for _, r := range res {
				gots = append(gots, got{r.Status, r.BodySHA256, r.Err != ""})
			}
			if diff := cmp.Diff(tt.want, gots); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunCallerRejectsBadSpecs(t *testing.T) {
	for _, in := range []string{`{`, `{"Op":"teleport"}`} {
		var out bytes.Buffer
		if code := runCaller(strings.NewReader(in), &out); code != 2 {
			t.Errorf("%s: exit %d, want 2 (%s)", in, code, out.Bytes())
		}
	}
}

// flood starts every connect it is asked for, even to a listener that
// never accepts, and refuses what is not an IPv4 address.
func TestFlood(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n, err := flood(ln.Addr().String(), 200)
	if err != nil || n != 200 {
		t.Errorf("flood: %d, %v", n, err)
	}
	for _, bad := range []string{"[::1]:80", "localhost:80", "127.0.0.1"} {
		if _, err := flood(bad, 1); err == nil {
			t.Errorf("flood(%q) accepted", bad)
		}
	}
}
