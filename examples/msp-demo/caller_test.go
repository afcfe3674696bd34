package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDemoCaller checks the demo caller's request on the wire (the target
// as given, "%2e%2e" included, since the traversal sample depends on it)
// and what it prints.
func TestDemoCaller(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	heads := make(chan string, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			var head strings.Builder
			for {
				line, err := br.ReadString('\n')
				head.WriteString(line)
				if err != nil || line == "\r\n" {
					break
				}
			}
			heads <- head.String()
			_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope\n")
			c.Close()
		}
	}()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	addr := l.Addr().String()
	tests := []struct {
		name              string
		url               string
		wantCode          int
		wantOut, wantHead string
	}{
		{"answered", "http://" + addr + "/metadata/%2e%2e/x?a=b&c=d", 0, "403\n",
			"GET /metadata/%2e%2e/x?a=b&c=d HTTP/1.1\r\nHost: " + addr + "\r\nMetadata: true\r\nConnection: close\r\n\r\n"},
		{"refused", "http://" + deadAddr + "/", 0, "no response\n", ""},
		{"not http", "https://" + addr + "/", 0, "no response\n", ""},
		{"bad URL", "http://a b/", 1, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := runDemoCaller(context.Background(), []string{tt.url}, &out, &errOut)
			if code != tt.wantCode || out.String() != tt.wantOut {
				t.Errorf("exit %d, stdout %q (stderr %q); want %d, %q", code, out.String(), errOut.String(), tt.wantCode, tt.wantOut)
			}
			var head string
			select {
			case head = <-heads:
			default:
			}
			if diff := cmp.Diff(tt.wantHead, head); diff != "" {
				t.Errorf("request head (-want +got):\n%s", diff)
			}
		})
	}
}
