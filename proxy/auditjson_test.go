package proxy

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var awkwardStrings = []string{"", "plain", `quote " and \ backslash`, "tab\tnewline\n\rcr", "\x00\x01\x1f\x7f",
	"<script>&amp;</script>", "caf\u00e9 \u4e2d", "\xff\xfe bad utf8 \xc3", "line\u2028sep\u2029", "emoji \U0001F600",
	"curl -H Metadata:true http://169.254.169.254/metadata?x=1&y=2"}

// The hand-written encoder must produce exactly what encoding/json does, so
// that readers of the connection log see no difference.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return awkwardStrings[r.IntN(len(awkwardStrings))] }
	for i := range 2000 {
		rec := &Record{
			Time:   time.Date(2026, 1, 2, 3, 4, 5, r.IntN(1e9), time.UTC).Add(time.Duration(r.IntN(1e6)) * time.Hour),
			Method: pick(), URL: pick(), ClientIP: pick(), ClientPort: uint16(r.Uint32()), IP: pick(), Port: uint16(r.Uint32()),
			UserID: r.Uint32(), UserName: pick(), ProcessFullPath: pick(), ProcessCmdLine: pick(), RunAsElevated: r.IntN(2) == 0,
			ResponseStatus: pick(), StatusCode: r.IntN(600), ElapsedTime: r.Int64N(1e6), ElapsedMicros: r.Int64N(1e9),
			Decision: pick(), Rule: pick(), Endpoint: pick(), Epoch: r.Uint64(), Signed: r.IntN(2) == 0,
			Retried: r.IntN(2) == 0, Forwarded: r.IntN(2) == 0,
		}
		if r.IntN(2) == 0 {
			rec.Reason, rec.Privilege, rec.Identity, rec.Mode, rec.ErrorDetails = pick(), pick(), pick(), pick(), pick()
		}
		switch r.IntN(3) {
		case 0:
			rec.UserGroups = nil
		case 1:
			rec.UserGroups = []string{}
		default:
			rec.UserGroups = []string{pick(), pick()}
		}
		if i%7 == 0 {
			rec.Time = rec.Time.In(time.FixedZone("X", 3600*5+1800))
		}
		want, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(rec.AppendJSON(nil))); diff != "" {
			t.Fatalf("record %d (-encoding/json +AppendJSON):\n%s", i, diff)
		}
	}
}

func BenchmarkRecordJSON(b *testing.B) {
	rec := &Record{Time: time.Now(), Method: "GET", URL: "/metadata/instance?api-version=2021-02-01", ClientIP: "127.0.0.1",
		ClientPort: 54321, IP: "169.254.169.254", Port: 80, UserName: "root", UserGroups: []string{"root"},
		ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl -H Metadata:true http://169.254.169.254/metadata/instance",
		RunAsElevated: true, ResponseStatus: "200 OK", StatusCode: 200, Decision: "allow", Rule: "rules", Endpoint: "imds", Signed: true, Forwarded: true}
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(rec)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = rec.AppendJSON(buf[:0])
		}
	})
}
