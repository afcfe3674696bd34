package msp

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
func TestAuditRecordJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return awkwardStrings[r.IntN(len(awkwardStrings))] }
	for i := range 2000 {
		rec := &AuditRecord{
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
		// The caller fields encoded apart, as the proxy does once per
		// connection, give the same line.
		caller := rec.AppendCallerJSON(nil)
		if diff := cmp.Diff(string(want), string(rec.AppendJSONCaller(nil, caller))); diff != "" {
			t.Fatalf("record %d (-encoding/json +AppendJSONCaller):\n%s", i, diff)
		}
	}
}

func BenchmarkAuditRecordJSON(b *testing.B) {
	rec := &AuditRecord{Time: time.Now(), Method: "GET", URL: "/metadata/instance?api-version=2021-02-01", ClientIP: "127.0.0.1",
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
	b.Run("AppendJSONCaller", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		caller := rec.AppendCallerJSON(nil)
		for b.Loop() {
			buf = rec.AppendJSONCaller(buf[:0], caller)
		}
	})
}

// TestAuditRecordRoundTrip: what the proxy writes is what policy reads,
// field for field. Renaming a JSON name on one side only breaks this test.
func TestAuditRecordRoundTrip(t *testing.T) {
	rec := AuditRecord{
		Time: time.Date(2026, 12, 4, 10, 11, 12, 13000, time.UTC), Method: "GET", URL: "/metadata/instance?api-version=2021-02-01",
		ClientIP: "127.0.0.1", ClientPort: 40000, IP: "169.254.169.254", Port: 80, UserID: 1000, UserName: "alice",
		UserGroups: []string{"alice", "users"}, ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl x", RunAsElevated: true,
		ResponseStatus: "403 Forbidden", StatusCode: 403, ElapsedTime: 2, ElapsedMicros: 2100, Decision: "deny", Rule: "imds-rules",
		Reason: "default", Privilege: "p", Identity: "i", Endpoint: "imds", Mode: "enforce", Epoch: 9, Signed: true, Retried: true,
		Forwarded: true, ErrorDetails: "Block unauthorized request",
	}
	var got AuditRecord
	if err := json.Unmarshal(rec.AppendJSON(nil), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, got); diff != "" {
		t.Errorf("read back (-written +read):\n%s", diff)
	}
}

// TestAuditRecordReadsOtherWriters: upstream writes responseStatus as a
// number, older versions as a bare code; statusCode follows it when absent.
func TestAuditRecordReadsOtherWriters(t *testing.T) {
	tests := []struct {
		name, line string
		status     string
		code       int
		verdict    Verdict
		wantErr    bool
	}{
		{"ours", `{"method":"GET","url":"/x","responseStatus":"403 Forbidden","statusCode":403,"decision":"deny"}`, "403 Forbidden", 403, VerdictDeny, false},
		{"upstream number", `{"method":"GET","url":"/x","responseStatus":403}`, "403", 403, VerdictDeny, false},
		{"bare code string", `{"method":"GET","url":"/x","responseStatus":"200"}`, "200", 200, VerdictAllow, false},
		{"audited", `{"method":"GET","url":"/x","responseStatus":"200 OK","decision":"audit"}`, "200 OK", 200, VerdictAllowAudited, false},
		{"no status", `{"method":"GET","url":"/x"}`, "", 0, VerdictAllow, false},
		{"null status", `{"method":"GET","url":"/x","responseStatus":null}`, "", 0, VerdictAllow, false},
		{"statusCode wins", `{"method":"GET","url":"/x","responseStatus":"200 OK","statusCode":502}`, "200 OK", 502, VerdictAllow, false},
		{"not a status", `{"method":"GET","url":"/x","responseStatus":"teapot"}`, "", 0, 0, true},
		{"wrong type", `{"method":"GET","url":"/x","responseStatus":{}}`, "", 0, 0, true},
		{"bad field type", `{"method":"GET","url":"/x","port":"eighty"}`, "", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r AuditRecord
			err := json.Unmarshal([]byte(tt.line), &r)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if r.ResponseStatus != tt.status || r.StatusCode != tt.code || r.Verdict() != tt.verdict {
				t.Errorf("got %q %d %v, want %q %d %v", r.ResponseStatus, r.StatusCode, r.Verdict(), tt.status, tt.code, tt.verdict)
			}
		})
	}
}

func TestAuditRecordRequest(t *testing.T) {
	tests := []struct{ url, want string }{
		{"/metadata/instance?a=b", "/metadata/instance?a=b"},
		{"http://169.254.169.254/metadata/instance?a=b", "/metadata/instance?a=b"},
		{"http://169.254.169.254?a=b", "/?a=b"},
		{"http://169.254.169.254", "/"},
	}
	for _, tt := range tests {
		r := AuditRecord{Method: "GET", URL: tt.url, ProcessFullPath: "/usr/bin/curl", IP: "169.254.169.254", Port: 80}
		req := r.Request()
		if req.RawURI != tt.want || req.Claims.ProcessName != "curl" || r.Destination() != EndpointIMDS {
			t.Errorf("%s: %q %q %v", tt.url, req.RawURI, req.Claims.ProcessName, r.Destination())
		}
	}
	if (&AuditRecord{IP: "None"}).Destination() != EndpointNone {
		t.Error("an unknown destination classified as an endpoint")
	}
}
