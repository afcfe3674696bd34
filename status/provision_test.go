package status

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// fakeClock is a settable clock for the provisioning timer.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestProvision(t *testing.T, keyDir string) (*Provision, *Registry, *fakeClock, *[]ProvisionResult) {
	t.Helper()
	reg := NewRegistry(&RegistryOptions{Version: testVersion})
	clk := &fakeClock{t: goldenTime}
	var mu sync.Mutex
	var finishes []ProvisionResult
	p, err := NewProvision(&ProvisionOptions{
		Registry: reg, KeyDir: keyDir, Now: clk.Now,
		OnFinished: func(_ context.Context, r ProvisionResult) { mu.Lock(); finishes = append(finishes, r); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, reg, clk, &finishes
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != StateFileMode {
			t.Errorf("%s mode = %v, want %v", path, fi.Mode().Perm(), os.FileMode(StateFileMode))
		}
	}
	return string(b)
}

func TestProvisionAllReadyWritesStateFiles(t *testing.T) {
	keyDir := filepath.Join(t.TempDir(), "keys") // created on demand
	p, _, clk, finishes := newTestProvision(t, keyDir)
	ctx := t.Context()
	for _, f := range []ReadyFlags{RedirectorReady, ListenerReady} {
		if err := p.SetReady(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(keyDir, StatusTagFile)); !os.IsNotExist(err) {
		t.Fatalf("status.tag exists before all flags are set: %v", err)
	}
	clk.Add(1500 * time.Millisecond)
	if err := p.SetReady(ctx, KeyLatchReady); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(keyDir, StatusTagFile)); got != "" {
		t.Errorf("status.tag = %q, want empty on success", got)
	}
	if got := readFile(t, filepath.Join(keyDir, ProvisionedTagFile)); got != "2025-04-23T12:00:01.623" {
		t.Errorf("provisioned.tag = %q", got)
	}
	if got, want := p.FinishedTick(), clk.Now().UnixNano(); got != want {
		t.Errorf("finished tick = %d, want %d", got, want)
	}
	// Every update that yields all-ready finishes again and refreshes the tick.
	clk.Add(time.Second)
	if err := p.SetReady(ctx, KeyLatchReady); err != nil {
		t.Fatal(err)
	}
	want := []ProvisionResult{{Flags: AllReady}, {Flags: AllReady}}
	if diff := cmp.Diff(want, *finishes); diff != "" {
		t.Errorf("finishes (-want +got):\n%s", diff)
	}
	if p.FinishedTick() != clk.Now().UnixNano() {
		t.Errorf("finished tick not refreshed")
	}
}

func TestProvisionTimeoutFailureLines(t *testing.T) {
	keyDir := t.TempDir()
	p, reg, clk, finishes := newTestProvision(t, keyDir)
	ctx := t.Context()
	reg.Set(ModuleRedirector, msp.ModuleUnknown, `Failed to start redirector: Failed to load program 'connect4' with error: <EPERM> & "more"`)
	reg.Set(ModuleKeyLatch, msp.ModuleRunning, "Failed to get key status - Host connection error: refused")
	if err := p.SetReady(ctx, ListenerReady); err != nil {
		t.Fatal(err)
	}
	clk.Add(DefaultProvisionTimeout - time.Millisecond)
	if fired, _ := p.CheckTimeout(ctx); fired {
		t.Fatal("timeout fired early")
	}
	clk.Add(time.Millisecond)
	fired, err := p.CheckTimeout(ctx)
	if !fired || err != nil {
		t.Fatalf("CheckTimeout = %v, %v; want fired", fired, err)
	}
	if fired, _ := p.CheckTimeout(ctx); fired {
		t.Error("timeout fired twice in one period")
	}
	wantMsg := "ebpfProgramStatus - Failed to start redirector: Failed to load program 'connect4' with error: <EPERM> & \"more\"\r\n" +
		"keyLatchStatus - Failed to get key status - Host connection error: refused\r\n"
	wantTag := "ebpfProgramStatus - Failed to start redirector: Failed to load program &apos;connect4&apos; with error: &lt;EPERM&gt; &amp; &quot;more&quot;\r\n" +
		"keyLatchStatus - Failed to get key status - Host connection error: refused\r\n"
	if diff := cmp.Diff(wantTag, readFile(t, filepath.Join(keyDir, StatusTagFile))); diff != "" {
		t.Errorf("status.tag (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]ProvisionResult{{Flags: ListenerReady, ErrorMessage: wantMsg, TimedOut: true}}, *finishes); diff != "" {
		t.Errorf("finishes (-want +got):\n%s", diff)
	}
	// The /provision answer is live and not escaped.
	if got := p.Query(0, false); got.ErrorMessage != wantMsg || !got.Finished {
		t.Errorf("Query = %+v", got)
	}
	// A reset starts a new period, in which the timeout may fire again.
	p.ResetKeyLatch()
	if p.FinishedTick() != 0 {
		t.Error("reset kept the finished tick")
	}
	clk.Add(DefaultProvisionTimeout)
	if fired, _ := p.CheckTimeout(ctx); !fired {
		t.Error("timeout did not fire in the period after a reset")
	}
}

func TestProvisionTimeoutNotWhenReady(t *testing.T) {
	p, _, clk, finishes := newTestProvision(t, "")
	_ = p.SetReady(t.Context(), AllReady)
	clk.Add(time.Hour)
	if fired, _ := p.CheckTimeout(t.Context()); fired {
		t.Error("timeout fired although all flags are set")
	}
	if len(*finishes) != 1 {
		t.Errorf("finishes = %d, want 1", len(*finishes))
	}
}

func TestProvisionStateFileError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p, _, _, finishes := newTestProvision(t, filepath.Join(file, "keys"))
	err := p.SetReady(t.Context(), AllReady)
	if !errors.Is(err, ErrWriteStateFile) {
		t.Errorf("SetReady error = %v, want ErrWriteStateFile", err)
	}
	// Provisioning still finished: the flag and the callback do not depend
	// on the files.
	if p.Flags() != AllReady || len(*finishes) != 1 || !p.Query(0, false).Finished {
		t.Errorf("flags %v, finishes %d", p.Flags(), len(*finishes))
	}
}

func TestProvisionQuery(t *testing.T) {
	const finishedAt = 1000
	tests := []struct {
		name      string
		finished  int64
		latched   bool
		query     int64
		notify    bool
		want      bool
		wantWoken bool
	}{
		{"finished after the query", finishedAt, false, finishedAt - 1, true, true, false},
		{"finished at the query tick", finishedAt, false, finishedAt, true, true, false},
		{"finished before the query, not latched", finishedAt, false, finishedAt + 1, true, false, true},
		{"finished before the query, latched", finishedAt, true, finishedAt + 1, true, true, false},
		{"never finished, latched", 0, true, 1, true, false, true},
		{"not finished, no notify header", finishedAt, false, finishedAt + 1, false, false, false},
		{"no tick header counts as 0", 0, false, 0, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _, _, _ := newTestProvision(t, "")
			p.finished = tt.finished
			p.SetLatched(tt.latched)
			got := p.Query(tt.query, tt.notify)
			if got.Finished != tt.want {
				t.Errorf("finished = %v, want %v", got.Finished, tt.want)
			}
			woken := false
			select {
			case <-p.Notify():
				woken = true
			default:
			}
			if woken != tt.wantWoken {
				t.Errorf("key latch woken = %v, want %v", woken, tt.wantWoken)
			}
		})
	}
}

func TestProvisionHandler(t *testing.T) {
	p, reg, _, _ := newTestProvision(t, "")
	reg.SetMessage(ModuleRedirector, "eBPF redirector is starting")
	_ = p.SetReady(t.Context(), KeyLatchReady|ListenerReady)

	tests := []struct {
		name       string
		header     http.Header
		wantCode   int
		wantBody   string
		wantClose  bool
		wantWakeUp bool
	}{
		{"no Metadata", http.Header{"X-Ms-Azure-Time-Tick": {"1"}}, 400, "Metadata header is required\n", true, false},
		{"empty Metadata is present", http.Header{"Metadata": {""}, "X-Ms-Azure-Time-Tick": {"1"}}, 200,
			`{"finished":false,"errorMessage":"ebpfProgramStatus - eBPF redirector is starting\r\n"}`, false, false},
		{"notify wakes the key latch", http.Header{"Metadata": {"true"}, "X-Ms-Azure-Time-Tick": {"1"}, "X-Ms-Azure-Notify": {"true"}}, 200,
			`{"finished":false,"errorMessage":"ebpfProgramStatus - eBPF redirector is starting\r\n"}`, false, true},
		{"garbage tick counts as 0", http.Header{"Metadata": {"true"}, "X-Ms-Azure-Time-Tick": {"soon"}}, 200,
			`{"finished":true,"errorMessage":"ebpfProgramStatus - eBPF redirector is starting\r\n"}`, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", msp.ProvisionPath, nil)
			req.Header = tt.header
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
			if got := rec.Header().Get("Connection") == "close"; got != tt.wantClose {
				t.Errorf("Connection: close = %v, want %v", got, tt.wantClose)
			}
			if tt.wantCode == 200 && rec.Header().Get("Content-Type") != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
			}
			woken := false
			select {
			case <-p.Notify():
				woken = true
			default:
			}
			if woken != tt.wantWakeUp {
				t.Errorf("woken = %v, want %v", woken, tt.wantWakeUp)
			}
		})
	}
}

func TestParseTimeTick(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1745409600123456789", 1745409600123456789},
		{" 42 ", 42},
		{"", 0},
		{"abc", 0},
		{"1.5", 0},
		{"-5", -5},
		{"170141183460469231731687303715884105727", math.MaxInt64}, // i128 max
		{"-170141183460469231731687303715884105728", math.MinInt64},
	}
	for _, tt := range tests {
		if got := parseTimeTick(tt.in); got != tt.want {
			t.Errorf("parseTimeTick(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestProvisionConsole(t *testing.T) {
	var buf bytes.Buffer
	reg := NewRegistry(&RegistryOptions{})
	p, err := NewProvision(&ProvisionOptions{Registry: reg, Console: &buf})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.SetReady(t.Context(), AllReady)
	if buf.String() != "Provision finished successfully\r\n" {
		t.Errorf("console = %q", buf.String())
	}
	if _, err := NewProvision(&ProvisionOptions{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewProvision without registry: %v", err)
	}
}

func TestReadyFlagsString(t *testing.T) {
	tests := map[ReadyFlags]string{
		0: "NONE", RedirectorReady: "REDIRECTOR", RedirectorReady | ListenerReady: "REDIRECTOR|LISTENER",
		AllReady: "REDIRECTOR|KEY_LATCH|LISTENER",
	}
	for f, want := range tests {
		if got := f.String(); got != want {
			t.Errorf("%d: %q, want %q", uint8(f), got, want)
		}
	}
}
