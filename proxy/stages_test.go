package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// The hot path stage by stage, each with its allocations, so that a
// regression in one shows in `go test -bench Stage` rather than only in
// gpa-bench's totals. The request is gpa-bench's: an IMDS GET by a user
// the rules allow, signed, audited.
const stageRequest = "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nUser-Agent: bench\r\n\r\n"

const stageResponse = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nDate: Fri, 04 Dec 2026 20:00:00 GMT\r\nContent-Length: 200\r\n\r\n"

func stageHead(b *testing.B) *httpwire.Request {
	r, err := readRequestHead(bufio.NewReader(strings.NewReader(stageRequest)), &httpwire.HeadOptions{}, new(httpwire.Request))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// stageConn is a client connection of a server that writes its audit
// lines to io.Discard, as far as the stages need one.
func stageConn(b *testing.B) *clientConn {
	s, err := New(Config{Resolver: &StaticResolver{}, Latch: SnapshotFunc(nil), AuditLog: io.Discard,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	c1, c2 := net.Pipe()
	b.Cleanup(func() { c1.Close(); c2.Close() })
	return &clientConn{srv: s, nc: c1, caller: userCaller(msp.IMDSAddr)}
}

func BenchmarkStage(b *testing.B) {
	b.Run("parse", func(b *testing.B) {
		sr := strings.NewReader(stageRequest)
		br := bufio.NewReader(sr)
		var req httpwire.Request
		opts := &httpwire.HeadOptions{}
		b.ReportAllocs()
		for b.Loop() {
			sr.Reset(stageRequest)
			br.Reset(sr)
			if _, err := readRequestHead(br, opts, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("identify", func(b *testing.B) {
		// A new connection of a process seen before: the kernel's record
		// and the process cache, no /proc reads (BenchmarkResolve has the
		// miss).
		proc := newFakeProc(b)
		proc.set(100, "/usr/local/bin/client", "client\x00--flag")
		lk := &recordLookup{}
		lk.set(msp.ConnectRecord{PID: 100, UID: 1000, StartTime: 5e9, ExecID: 1, OriginalDst: msp.IMDSAddr})
		r := NewProcResolver(lk, &ProcResolverOptions{ProcRoot: proc.root,
			LookupUser: func(uint32) (string, []string, error) { return "alice", []string{"alice"}, nil }})
		conn := connFrom(5000)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Resolve(context.Background(), conn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decide", func(b *testing.B) {
		cc := stageConn(b)
		snap := snapshotFor(b, 1, denyTokenRules(), nil)
		r := stageHead(b)
		rec := cc.newRecord(r, time.Now())
		b.ReportAllocs()
		for b.Loop() {
			if d := cc.decide(snap, msp.EndpointIMDS, r, rec); d.Verdict != msp.VerdictAllow {
				b.Fatalf("verdict %v", d.Verdict)
			}
		}
	})
	b.Run("sign", func(b *testing.B) {
		key := testKey(b, 1)
		snap := snapshotFor(b, 1, nil, &key)
		r := stageHead(b)
		hdr := make([]msp.HeaderField, 0, 8)
		b.ReportAllocs()
		for b.Loop() {
			hdr = append(hdr[:0], r.Header...)
			hdr = append(hdr, msp.HeaderField{Name: msp.HeaderClaims, Value: msp.ClaimsHeaderValue(false)},
				msp.HeaderField{Name: msp.HeaderDate, Value: "2026-12-04T20:00:00Z"})
			var err error
			if hdr, err = sign(snap.Signer, r, hdr, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("audit", func(b *testing.B) {
		cc := stageConn(b)
		r := stageHead(b)
		b.ReportAllocs()
		for b.Loop() {
			rec := cc.newRecord(r, time.Now())
			rec.Decision, rec.Rule, rec.Endpoint, rec.Signed, rec.Forwarded = "allow", "imds-deny", "imds", true, true
			cc.finish(rec, 200)
		}
	})
	b.Run("relay", func(b *testing.B) {
		// The host's answer read from the upstream buffer and written to
		// the client's, framing and response marker included.
		cc := stageConn(b)
		cc.bw = bufio.NewWriterSize(io.Discard, 4<<10)
		r := stageHead(b)
		answer := stageResponse + strings.Repeat("x", 200)
		sr := strings.NewReader(answer)
		up1, up2 := net.Pipe()
		b.Cleanup(func() { up1.Close(); up2.Close() })
		uc := &upstreamConn{conn: up1, br: bufio.NewReaderSize(sr, 8<<10)}
		b.ReportAllocs()
		for b.Loop() {
			sr.Reset(answer)
			uc.br.Reset(sr)
			if err := httpwire.ReadResponseInto(uc.br, r.Method, &uc.resp); err != nil {
				b.Fatal(err)
			}
			// Not pooled: the server's pool would keep the pipe.
			uc.resp.Close = true
			if _, err := cc.relay(r, &uc.resp, uc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
