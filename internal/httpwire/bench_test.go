package httpwire

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// The heads of BenchmarkProxy*'s request and of a typical IMDS answer.
const (
	benchRequest  = "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nUser-Agent: bench\r\n\r\n"
	benchResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nDate: Wed, 23 Apr 2025 12:00:00 GMT\r\nServer: Microsoft-IIS/10.0\r\nContent-Length: 2\r\n\r\nok"
)

// BenchmarkReadRequestHead is the proxy's per-request head parse: three
// allocations (the head, its fields, one string for all of them).
func BenchmarkReadRequestHead(b *testing.B) {
	sr := strings.NewReader(benchRequest)
	br := bufio.NewReader(sr)
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(benchRequest)
		br.Reset(sr)
		if _, err := ReadRequestHead(br, &HeadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadResponse is the proxy's per-response head parse and body
// read.
func BenchmarkReadResponse(b *testing.B) {
	sr := strings.NewReader(benchResponse)
	br := bufio.NewReader(sr)
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(benchResponse)
		br.Reset(sr)
		resp, err := ReadResponse(br, "GET")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
	}
}
