package fleet_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"crypto/tls"

	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/metadatasec/gpa/arm/armtest"
	"github.com/metadatasec/gpa/arm/fleet"
)

// checkExactlyOnce fails unless every VM and scale set of ids that drifted
// from enforceAll at the start was written exactly once, the rest never,
// and every one of them now has the desired state.
func checkExactlyOnce(t testing.TB, srv *armtest.Server, ids []string, drifted map[string]bool) {
	t.Helper()
	writes := srv.Writes()
	lost, dup := 0, 0
	for _, id := range ids {
		key := strings.ToLower(id)
		if isInstance(key) {
			continue
		}
		switch n := writes[key]; {
		case drifted[key] && n == 0, !settled(srv, id):
			lost++
			if lost < 5 {
				t.Errorf("%s: lost (written %d times): %s", id, n, srv.ProxyAgentSettings(id))
			}
		case n > 1 || (!drifted[key] && n > 0):
			dup++
			if dup < 5 {
				t.Errorf("%s written %d times", id, n)
			}
		}
	}
	if lost+dup > 0 {
		t.Errorf("%d lost, %d duplicated updates", lost, dup)
	}
}

func isInstance(id string) bool {
	id = strings.ToLower(id)
	return strings.Contains(id, "virtualmachinescalesets/") && strings.Contains(id, "/virtualmachines/")
}

func settled(srv *armtest.Server, id string) bool {
	s := string(srv.ProxyAgentSettings(id))
	return strings.Contains(s, `"enabled":true`) && strings.Contains(s, `"wireServer":{"mode":"Enforce"}`) && strings.Contains(s, `"imds":{"mode":"Enforce"}`)
}

// driftedAtStart lists, lowercased, the VMs and scale sets that differ from
// enforceAll.
func driftedAtStart(srv *armtest.Server, ids []string) map[string]bool {
	out := map[string]bool{}
	for _, id := range ids {
		if !settled(srv, id) {
			out[strings.ToLower(id)] = true
		}
	}
	return out
}

// throttleARM puts a write rate limit in place, as ARM's per-subscription
// window, and refuses a burst of requests of any kind outright, as a
// throttled front door would.
func throttleARM(srv *armtest.Server, writes int, window time.Duration) {
	srv.SetWriteRateLimit(writes, window)
	srv.Throttle(20, 10*time.Millisecond)
}

func applyUnderThrottling(t testing.TB, n, writes int, window time.Duration) {
	srv := newServer(t)
	ids := srv.AddFleet(n, &armtest.FleetOptions{ScaleSets: n / 50})
	drifted := driftedAtStart(srv, ids)
	throttleARM(srv, writes, window)
	c := newClient(t, srv)
	resp, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, &fleet.RolloutOptions{
		Waves: []float64{0.01, 0.1, 0.5, 1}, MaxParallel: 50, PollFrequency: time.Millisecond,
		OnEvent: func(e fleet.Event) {
			if e.Err != nil {
				n := 0
				for _, r := range srv.Requests() {
					if strings.EqualFold(r.Path, e.ID) {
						n++
					}
				}
				t.Errorf("%s after %d requests: %v", e.ID, n, e.Err)
			}
		},
	})
	if err != nil {
		t.Fatalf("%+v: %v", resp, err)
	}
	if resp.Failed != 0 || resp.Written != resp.Planned {
		t.Errorf("%+v", resp)
	}
	patches := 0
	for _, r := range srv.Requests() {
		if r.Method == "PATCH" {
			patches++
		}
	}
	if patches <= resp.Written {
		t.Errorf("%d PATCHes for %d writes: the test did not throttle", patches, resp.Written)
	}
	checkExactlyOnce(t, srv, ids, drifted)
}

func TestApplyUnderThrottlingExactlyOnce(t *testing.T) {
	// A wave of fifty parallel writes meets a limit of ten per 200ms
	// however slow the machine (or the race detector) is.
	applyUnderThrottling(t, 150, 10, 200*time.Millisecond)
}

// BenchmarkApply10k is the scale goal: 10,000 resources,
// --max-parallel 50, under throttling, no update lost or duplicated.
func BenchmarkApply10k(b *testing.B) {
	for b.Loop() {
		start := time.Now()
		applyUnderThrottling(b, 10_000, 20, 30*time.Millisecond)
		b.ReportMetric(10_000/time.Since(start).Seconds(), "resources/s")
	}
}

// TestResumeAfterCrashExactlyOnce stops a rollout at a random point, as a
// crash or Ctrl-C would (requests in flight are cut off, whether or not the
// service applied them), and resumes it from the state file.
func TestResumeAfterCrashExactlyOnce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	srv := newServer(t)
	ids := srv.AddFleet(200, &armtest.FleetOptions{ScaleSets: 6})
	drifted := driftedAtStart(srv, ids)
	c := newClient(t, srv)
	state := filepath.Join(t.TempDir(), "state")
	targets := 0
	for id := range drifted {
		if !isInstance(id) {
			targets++
		}
	}
	crashAt := int64(1 + rng.IntN(targets-1))
	cctx, crash := context.WithCancel(ctx(t))
	var seen atomic.Int64
	o := &fleet.RolloutOptions{Waves: []float64{0.1, 1}, MaxParallel: 8, StatePath: state, PollFrequency: time.Millisecond,
		OnEvent: func(fleet.Event) {
			if seen.Add(1) == crashAt {
				crash()
			}
		}}
	first, err := c.Apply(cctx, fleet.Selection{}, enforceAll, o)
	if err == nil {
		t.Fatalf("the crash at event %d did not stop the rollout: %+v", crashAt, first)
	}
	o.OnEvent = nil
	second, err := c.Apply(ctx(t), fleet.Selection{}, enforceAll, o)
	if err != nil {
		t.Fatal(err)
	}
	if second.Planned != first.Planned || second.Skipped < first.Written {
		t.Errorf("first %+v, second %+v", first, second)
	}
	checkExactlyOnce(t, srv, ids, drifted)
}

// TestFakeFleetProcess is not a test: BenchmarkInventory100k starts the test
// binary with GPA_FLEET_FAKE_N set to run the fake in a process of its own,
// so that the benchmark's RSS is the client's alone.
func TestFakeFleetProcess(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("GPA_FLEET_FAKE_N"))
	if err != nil {
		t.Skip("helper process for BenchmarkInventory100k")
	}
	srv := armtest.NewServer(nil)
	defer srv.Close()
	srv.AddFleet(n, &armtest.FleetOptions{ScaleSets: n / 100, Subscriptions: 4})
	fmt.Printf("FAKE %s %s\n", srv.URL, base64.StdEncoding.EncodeToString(srv.Certificate().Raw))
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes stdin
}

// BenchmarkInventory100k streams 100,000 resources from the fake, counting
// the summary and rendering every row as JSON, and fails if the peak RSS of
// the process exceeds 200 MB.
func BenchmarkInventory100k(b *testing.B) {
	const n = 100_000
	cmd := exec.Command(os.Args[0], "-test.run=^TestFakeFleetProcess$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "GPA_FLEET_FAKE_N="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	var url, certB64 string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "FAKE" {
			url, certB64 = f[1], f[2]
			break
		}
	}
	der, err := base64.StdEncoding.DecodeString(certB64)
	if err != nil || url == "" {
		b.Fatalf("fake process did not start: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c, err := fleet.NewClient(&fake.TokenCredential{}, &fleet.Options{ClientOptions: azarm.ClientOptions{ClientOptions: armClientOptions(url, pool)}})
	if err != nil {
		b.Fatal(err)
	}
	resetPeakRSS(b)
	for b.Loop() {
		start := time.Now()
		sum := fleet.NewSummary()
		enc := json.NewEncoder(io.Discard)
		resp, err := c.Inventory(context.Background(), fleet.Selection{}, func(r fleet.Resource) error {
			sum.Add(r)
			return enc.Encode(r)
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if resp.Rows != n || resp.Pages != n/fleet.DefaultPageSize {
			b.Fatalf("%+v", resp)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "resources/s")
	}
	peak := peakRSSMB(b)
	b.ReportMetric(peak, "peak-RSS-MB")
	if peak > 200 {
		b.Errorf("peak RSS %.0f MB, goal 200 MB: rows are being kept", peak)
	}
}

func armClientOptions(url string, pool *x509.CertPool) policy.ClientOptions {
	return policy.ClientOptions{
		Cloud: cloud.Configuration{Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
			cloud.ResourceManager: {Endpoint: url, Audience: armtest.Audience},
		}},
		Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 100}},
	}
}

// resetPeakRSS returns what earlier benchmarks left to the system and
// clears the kernel's high-water mark of this process's RSS.
func resetPeakRSS(b *testing.B) {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset the peak RSS (%v); it includes the set-up", err)
	}
}

func peakRSSMB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
