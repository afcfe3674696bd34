package status

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/metadatasec/gpa/msp"
)

// BenchmarkWaitProvisionedReady is one `--status --wait 120` against a
// ready agent, new client and connection included, as cloud-init runs it.
func BenchmarkWaitProvisionedReady(b *testing.B) {
	reg := NewRegistry(&RegistryOptions{})
	p, _ := NewProvision(&ProvisionOptions{Registry: reg})
	p.SetLatched(true)
	_ = p.SetReady(b.Context(), AllReady)
	srv := httptest.NewServer(p)
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	for b.Loop() {
		res, err := WaitProvisioned(b.Context(), &WaitOptions{Addr: addr, Wait: 120 * time.Second})
		if err != nil || res.ExitCode() != ExitFinished {
			b.Fatalf("%+v %v", res, err)
		}
	}
}

func BenchmarkProvisionServeHTTP(b *testing.B) {
	reg := NewRegistry(&RegistryOptions{})
	p, _ := NewProvision(&ProvisionOptions{Registry: reg})
	req := httptest.NewRequest("GET", msp.ProvisionPath, nil)
	req.Header.Set(HeaderMetadata, "true")
	req.Header.Set(HeaderTimeTick, strconv.FormatInt(time.Now().UnixNano(), 10))
	for b.Loop() {
		p.ServeHTTP(httptest.NewRecorder(), req)
	}
}

// The per-request calls of the proxy's hot path.
func BenchmarkCountRequest(b *testing.B) {
	reg := NewRegistry(&RegistryOptions{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			reg.CountRequest()
		}
	})
}

func BenchmarkSummaryRecord(b *testing.B) {
	a := NewSummaryAggregator(&SummaryOptions{})
	c := Connection{UserName: "root", UserGroups: []string{"root"}, ClientIP: "127.0.0.1", IP: "169.254.169.254",
		Port: 80, ProcessFullPath: "/usr/bin/curl", ProcessCmdLine: "curl -H Metadata:true http://169.254.169.254/metadata/instance",
		ResponseStatus: "200 OK"}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Record(now, c)
		}
	})
}

func BenchmarkSnapshotMarshal(b *testing.B) {
	reg := goldenStates()["healthy"]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Snapshot(goldenTime).MarshalIndent(); err != nil {
			b.Fatal(err)
		}
	}
}
