package status

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func TestWriteOnceFileAndMonitorMessage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "status.json")
	reg := NewRegistry(&RegistryOptions{Version: testVersion})
	w, err := NewWriter(reg, &WriterOptions{Path: path, Now: func() time.Time { return goldenTime }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteOnce(); err != nil {
		t.Fatal(err)
	}
	s, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The first file carries the monitor's start message; the write's own
	// result shows in the next one.
	if diff := cmp.Diff(ModuleStatus{Status: msp.ModuleRunning, Message: MessageMonitorStarted}, s.ProxyAgentStatus.MonitorStatus); diff != "" {
		t.Errorf("first monitorStatus (-want +got):\n%s", diff)
	}
	if err := w.WriteOnce(); err != nil {
		t.Fatal(err)
	}
	s, _ = ReadFile(path)
	if got, want := s.ProxyAgentStatus.MonitorStatus.Message, "Aggregate status written to status file: "+path; got != want {
		t.Errorf("monitor message = %q, want %q", got, want)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != StatusFileMode {
			t.Errorf("mode = %v, want %v", fi.Mode().Perm(), os.FileMode(StatusFileMode))
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestNewWriterRejectsNilRegistry(t *testing.T) {
	if _, err := NewWriter(nil, &WriterOptions{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("err = %v, want ErrInvalidOptions", err)
	}
}

// TestWriterFailureReportedNotFatal uses a status folder that cannot hold
// a file because it is a regular file: this fails for root too.
func TestWriterFailureReportedNotFatal(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	checkWriteFailureReported(t, filepath.Join(notADir, "status.json"))
}

// checkWriteFailureReported runs a writer against an unwritable path and
// checks the failure is a typed error, shows in monitorStatus (as served on
// /gpa-aggregated-status) and does not stop the writer.
func checkWriteFailureReported(t *testing.T, path string) {
	t.Helper()
	reg := NewRegistry(&RegistryOptions{Version: testVersion})
	w, err := NewWriter(reg, &WriterOptions{Path: path, Interval: 20 * time.Millisecond, MinSpacing: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteOnce(); !errors.Is(err, ErrWriteStatus) {
		t.Fatalf("WriteOnce error = %v, want ErrWriteStatus", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// The agent keeps going: the registry takes updates, the writer keeps
	// retrying, and the error is served.
	reg.Set(ModuleListener, msp.ModuleRunning, "Started proxy listener, ready to accept request - 1")
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	default:
	}
	rec := httptest.NewRecorder()
	AggregateStatusHandler(reg, nil).ServeHTTP(rec, httptest.NewRequest("GET", msp.AggregateStatusPath, nil))
	s, err := Parse(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	m := s.ProxyAgentStatus.MonitorStatus
	if m.Status != msp.ModuleRunning || !strings.HasPrefix(m.Message, "Error writing aggregate status to status file: ") {
		t.Errorf("monitorStatus = %+v", m)
	}
	if s.ProxyAgentStatus.ProxyListenerStatus.Status != msp.ModuleRunning {
		t.Errorf("listener update lost: %+v", s.ProxyAgentStatus.ProxyListenerStatus)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s exists although the folder is unwritable", path)
	}
}

func TestWriterReadOnlyFolderUnprivileged(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("permission bits do not stop root or apply on Windows; TestWriterReadOnlyFolder covers root on Linux")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	checkWriteFailureReported(t, filepath.Join(dir, "status.json"))
}

// TestWriterConcurrentReporters has 50 goroutines report at once while the
// writer runs; run it with -race.
func TestWriterConcurrentReporters(t *testing.T) {
	const workers, perWorker = 50, 200
	path := filepath.Join(t.TempDir(), "status.json")
	reg := NewRegistry(&RegistryOptions{Version: testVersion})
	w, err := NewWriter(reg, &WriterOptions{Path: path, Interval: 5 * time.Millisecond, MinSpacing: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	now := time.Now()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			mod := []Module{ModuleKeyLatch, ModuleRedirector, ModuleListener, ModuleTelemetry}[g%4]
			for i := range perWorker {
				reg.CountRequest()
				reg.Connections().Record(now, Connection{UserName: fmt.Sprint("u", g%5), IP: "169.254.169.254", Port: 80, ResponseStatus: "200 OK"})
				switch i % 3 {
				case 0:
					reg.Set(mod, msp.ModuleRunning, fmt.Sprintf("worker %d step %d", g, i))
				case 1:
					reg.SetMessage(mod, "message")
				default:
					reg.SetKeyLatchStates(KeyLatchStates{SecureChannelState: threeEnforce, KeyIncarnationID: fmt.Sprint(i)})
				}
				_ = reg.Module(mod)
			}
		})
	}
	wg.Wait()
	reg.Set(ModuleListener, msp.ModuleStopped, "final")
	cancel()
	<-done

	s, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a := s.ProxyAgentStatus
	if a.ProxyConnectionsCount != workers*perWorker {
		t.Errorf("proxyConnectionsCount = %d, want %d", a.ProxyConnectionsCount, workers*perWorker)
	}
	var sum uint64
	for _, c := range s.ProxyConnectionSummary {
		sum += c.Count
	}
	if sum != workers*perWorker || len(s.ProxyConnectionSummary) != 5 {
		t.Errorf("summary: %d rows counting %d, want 5 rows counting %d", len(s.ProxyConnectionSummary), sum, workers*perWorker)
	}
	// The last write happens after the last change, so the file is current.
	if diff := cmp.Diff(ModuleStatus{Status: msp.ModuleStopped, Message: "final"}, a.ProxyListenerStatus); diff != "" {
		t.Errorf("listener (-want +got):\n%s", diff)
	}
}

// TestWriterNeverHalfWritten reads the file in a loop while another
// goroutine rewrites it with contents of changing length: every read must
// parse.
func TestWriterNeverHalfWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	reg := NewRegistry(&RegistryOptions{Version: testVersion})
	w, err := NewWriter(reg, &WriterOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteOnce(); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			data, err := os.ReadFile(path)
			if err == nil {
				_, err = Parse(data)
			}
			reads.Add(1)
			if err != nil {
				bad.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}
	})
	for i := range 300 {
		// Alternate long and short messages so a torn file could not parse.
		reg.SetMessage(ModuleRedirector, strings.Repeat("x", (i%7)*400))
		if err := w.WriteOnce(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d reads saw an incomplete file, first: %v", bad.Load(), reads.Load(), firstErr.Load())
	}
	if reads.Load() < 10 {
		t.Fatalf("reader only managed %d reads; the test proved nothing", reads.Load())
	}
}

func TestWriterWritesSoonAfterChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	reg := NewRegistry(&RegistryOptions{Version: testVersion})
	// A periodic write would come only after an hour: any write seen here
	// was caused by the change.
	w, err := NewWriter(reg, &WriterOptions{Path: path, Interval: time.Hour, MinSpacing: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	// Stop the writer's final write before the temporary folder goes.
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil })
	reg.Set(ModuleRedirector, msp.ModuleRunning, "Started Redirector with eBPF maps - 9")
	waitFor(t, func() bool {
		s, err := ReadFile(path)
		return err == nil && s.ProxyAgentStatus.EBPFProgramStatus.Status == msp.ModuleRunning
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
