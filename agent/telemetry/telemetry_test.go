package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

// fakeSender records what it was given and fails while fail is set.
type fakeSender struct {
	mu     sync.Mutex
	fail   bool
	bodies []string
	tries  int
}

func (f *fakeSender) SendTelemetry(_ context.Context, xml []byte, _ *msp.Signer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries++
	if f.fail {
		return errors.New("host down")
	}
	f.bodies = append(f.bodies, string(xml))
	return nil
}

func (f *fakeSender) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

var testVM = VMData{KeywordName: `{"CpuArchitecture":"x86_64"}`, TenantName: "t<1>", VMID: "vm-1", ImageOrigin: 1, OSVersion: "Linux:Debian-13", RAMInMB: 2048, Processors: 2}

func TestBatchXMLIsUpstreamsFormat(t *testing.T) {
	e := Event{EventLevel: "WARN", Message: `a "quoted" <tag> & 'x' ]]> end`, Version: "1.2.3", TaskName: "keylatch",
		EventPid: "42", EventTid: "00000007", OperationId: "ProxyAgent", TimeStamp: "2026-12-04T17:00:00.123"}
	b := NewBatch(testVM)
	if !b.Add(&e) {
		t.Fatal("one small event does not fit an empty batch")
	}
	want := `<?xml version="1.0"?><TelemetryData version="1.0"><Provider id="FFF0196F-EE4C-4EAF-9AA5-776F622DEB4F">` +
		`<Event id="7"><![CDATA[` +
		`<Param Name="KeywordName" Value="{&quot;CpuArchitecture&quot;:&quot;x86_64&quot;}" T="mt:wstr" />` +
		`<Param Name="TenantName" Value="t&lt;1&gt;" T="mt:wstr" />` +
		`<Param Name="RoleName" Value="" T="mt:wstr" />` +
		`<Param Name="RoleInstanceName" Value="" T="mt:wstr" />` +
		`<Param Name="ContainerId" Value="" T="mt:wstr" />` +
		`<Param Name="ResourceGroupName" Value="" T="mt:wstr" />` +
		`<Param Name="SubscriptionId" Value="" T="mt:wstr" />` +
		`<Param Name="VMId" Value="vm-1" T="mt:wstr" />` +
		`<Param Name="ImageOrigin" Value="1" T="mt:uint64" />` +
		`<Param Name="OSVersion" Value="Linux:Debian-13" T="mt:wstr" />` +
		`<Param Name="RAM" Value="2048" T="mt:uint64" />` +
		`<Param Name="Processors" Value="2" T="mt:uint64" />` +
		`<Param Name="EventPid" Value="42" T="mt:uint64" />` +
		`<Param Name="EventTid" Value="7" T="mt:uint64" />` +
		`<Param Name="GAVersion" Value="1.2.3" T="mt:wstr" />` +
		`<Param Name="ExecutionMode" Value="ProxyAgent" T="mt:wstr" />` +
		`<Param Name="TaskName" Value="keylatch" T="mt:wstr" />` +
		`<Param Name="OpcodeName" Value="2026-12-04T17:00:00.123" T="mt:wstr" />` +
		`<Param Name="EventName" Value="MicrosoftAzureGuestProxyAgent" T="mt:wstr" />` +
		`<Param Name="CapabilityUsed" Value="WARN" T="mt:wstr" />` +
		`<Param Name="Context1" Value="a &quot;quoted&quot; &lt;tag&gt; &amp; &apos;x&apos; ]]&gt; end" T="mt:wstr" />` +
		`<Param Name="Context2" Value="2026-12-04T17:00:00.123" T="mt:wstr" />` +
		`<Param Name="Context3" Value="ProxyAgent" T="mt:wstr" />` +
		`]]></Event></Provider></TelemetryData>`
	if diff := cmp.Diff(want, string(b.XML())); diff != "" {
		t.Errorf("XML (-want +got):\n%s", diff)
	}
}

func TestEscapeDropsWhatXMLCannotCarry(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"},
		{"tab\tnl\ncr\r", "tab\tnl\ncr\r"},
		{"nul\x00bell\x07", "nul\uFFFDbell\uFFFD"},
		{"]]>", "]]&gt;"},
	} {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewEventTruncatesOnACharacterBoundary(t *testing.T) {
	msg := strings.Repeat("a", MaxMessageLength-1) + "é" // é is 2 bytes: straddles the limit
	e := NewEvent(time.Date(2026, 12, 4, 17, 0, 0, 123456789, time.UTC), slog.LevelError, msg, "task", "op", "1.0")
	if len(e.Message) != MaxMessageLength-1 {
		t.Errorf("message is %d bytes, want %d (cut before the split character)", len(e.Message), MaxMessageLength-1)
	}
	want := Event{EventLevel: "ERROR", Message: e.Message, Version: "1.0", TaskName: "task", EventPid: e.EventPid, EventTid: "00000000",
		OperationId: "op", TimeStamp: "2026-12-04T17:00:00.123"}
	if diff := cmp.Diff(want, e); diff != "" {
		t.Error(diff)
	}
}

func TestLevelName(t *testing.T) {
	for l, want := range map[slog.Level]string{slog.LevelError: "ERROR", slog.LevelWarn: "WARN", slog.LevelInfo: "INFO", slog.LevelDebug: "DEBUG", slog.LevelDebug - 4: "TRACE"} {
		if got := LevelName(l); got != want {
			t.Errorf("LevelName(%v) = %q, want %q", l, got, want)
		}
	}
}

// The event file format is upstream's: a file written by upstream is read
// and a file we write has upstream's field names.
func TestEventFileRoundTripsUpstreamsFormat(t *testing.T) {
	dir := t.TempDir()
	upstream := `[{"EventLevel":"INFO","Message":"from upstream","Version":"1.0.30","TaskName":"t","EventPid":"1","EventTid":"00000002","OperationId":"o","TimeStamp":"2026-01-01T00:00:00.000"}]`
	if err := os.WriteFile(filepath.Join(dir, "1700000000000000000.json"), []byte(upstream), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := New(&Options{Dir: dir, Sender: &fakeSender{}})
	p.readFiles()
	got := drain(p.send)
	want := []Event{{EventLevel: "INFO", Message: "from upstream", Version: "1.0.30", TaskName: "t", EventPid: "1", EventTid: "00000002", OperationId: "o", TimeStamp: "2026-01-01T00:00:00.000"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("read (-want +got):\n%s", diff)
	}
	if names, _ := p.eventFiles(); len(names) != 0 {
		t.Errorf("files left after reading: %v", names)
	}
	p.spill(want)
	names, _ := p.eventFiles()
	if len(names) != 1 {
		t.Fatalf("files after spill: %v", names)
	}
	data, _ := os.ReadFile(filepath.Join(dir, names[0]))
	var raw []map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	var upRaw []map[string]string
	_ = json.Unmarshal([]byte(upstream), &upRaw)
	if diff := cmp.Diff(upRaw, raw); diff != "" {
		t.Errorf("written file differs from upstream's shape (-upstream +ours):\n%s", diff)
	}
}

func TestUnreadableEventFilesAreDropped(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"1.json": "{not json", "2.json": `[]`, "notes.json": "ignored", "3.txt": "ignored"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := New(&Options{Dir: dir, Sender: &fakeSender{}})
	p.readFiles()
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if diff := cmp.Diff([]string{"3.txt", "notes.json"}, left); diff != "" {
		t.Errorf("files left (-want +got):\n%s", diff)
	}
	if got := p.Stats().Dropped; got != 1 {
		t.Errorf("Dropped = %d, want 1 (the malformed file)", got)
	}
}

// A host that is down loses no more than upstream's bounds: 1000 events in
// memory, 1000 in the send queue, maxEventFileCount files; the rest is
// dropped and counted, and Write never blocks.
func TestBoundsWhenTheHostIsDown(t *testing.T) {
	dir := t.TempDir()
	const maxFiles = 2
	p, _ := New(&Options{Dir: dir, MaxEventFiles: maxFiles, Sender: &fakeSender{fail: true}})
	write := func(n int) (accepted int) {
		for range n {
			if p.Write(Event{Message: "m"}) {
				accepted++
			}
		}
		return accepted
	}
	if got := write(QueueCapacity + 7); got != QueueCapacity {
		t.Fatalf("accepted %d, want the queue's %d", got, QueueCapacity)
	}
	p.flush() // all 1000 to the send queue (no sender runs)
	for round := range maxFiles + 1 {
		write(10)
		p.flush()
		names, _ := p.eventFiles()
		if want := min(round+1, maxFiles); len(names) != want {
			t.Fatalf("round %d: %d event files, want %d", round, len(names), want)
		}
	}
	want := Stats{Spilled: 10 * maxFiles, Dropped: 7 + 10}
	if diff := cmp.Diff(want, p.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	// Without a folder, what does not fit is dropped.
	q, _ := New(&Options{Sender: &fakeSender{}})
	for range QueueCapacity + 5 {
		q.Write(Event{})
	}
	q.flush()
	q.Write(Event{})
	q.flush()
	if got := q.Stats().Dropped; got != 5+1 {
		t.Errorf("no folder: Dropped = %d, want 6", got)
	}
}

// A file whose events do not fit the send queue waits for a later round.
func TestReadLeavesFilesTheQueueCannotTake(t *testing.T) {
	dir := t.TempDir()
	p, _ := New(&Options{Dir: dir, Sender: &fakeSender{}})
	for range QueueCapacity - 1 {
		p.send <- Event{}
	}
	p.spill([]Event{{Message: "a"}, {Message: "b"}})
	p.readFiles()
	if names, _ := p.eventFiles(); len(names) != 1 {
		t.Fatalf("files = %v, want the one that did not fit", names)
	}
	drain(p.send)
	p.readFiles()
	if names, _ := p.eventFiles(); len(names) != 0 {
		t.Errorf("files = %v after room was made", names)
	}
	if got := len(p.send); got != 2 {
		t.Errorf("queued %d, want 2", got)
	}
}

func TestSenderBatchesUnder64KiBAndRetries(t *testing.T) {
	s := &fakeSender{}
	p, _ := New(&Options{Sender: s, VMData: func(context.Context) VMData { return testVM }, RetryDelay: time.Millisecond})
	const n = 60 // 60 events of 4 KiB: at least four batches
	for i := range n {
		p.send <- Event{Message: strings.Repeat("x", MaxMessageLength-3) + string(rune('a'+i%26)) + "!!", TaskName: "t"}
	}
	s.fail = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.sender(ctx) }()
	p.wake()
	// The first batch fails SendTries times and is dropped; the rest go.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		tries := s.tries
		if tries >= SendTries {
			s.fail = false
		}
		s.mu.Unlock()
		if len(p.send) == 0 && p.Stats().Sent+p.Stats().Dropped == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all events were handled: %+v, %d queued", p.Stats(), len(p.send))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	bodies := s.sent()
	if len(bodies) < 3 {
		t.Fatalf("%d batches sent, want several", len(bodies))
	}
	events := 0
	for i, b := range bodies {
		if len(b) >= MaxPayload {
			t.Errorf("batch %d is %d bytes, want under %d", i, len(b), MaxPayload)
		}
		events += strings.Count(b, `<Event id="7">`)
	}
	st := p.Stats()
	if uint64(events) != st.Sent || st.Dropped == 0 || st.Sent+st.Dropped != n {
		t.Errorf("events in bodies %d, stats %+v: want every event sent or dropped with the first batch", events, st)
	}
}

func TestRunSendsAndSpillsAtShutdown(t *testing.T) {
	dir := t.TempDir()
	s := &fakeSender{}
	p, _ := New(&Options{Dir: dir, Sender: s, FlushInterval: 10 * time.Millisecond, ReadInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	p.Write(Event{Message: "hello host"})
	for deadline := time.Now().Add(5 * time.Second); len(s.sent()) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing sent")
		}
	}
	if !strings.Contains(s.sent()[0], `Value="hello host"`) {
		t.Errorf("sent %s", s.sent()[0])
	}
	// Queued at shutdown: kept on disk for the next start.
	for range 3 {
		p.mem <- Event{Message: "late"}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	names, _ := p.eventFiles()
	if len(names) != 1 {
		t.Fatalf("files after shutdown: %v", names)
	}
	evs, err := readEventFile(filepath.Join(dir, names[0]))
	if err != nil || len(evs) != 3 {
		t.Errorf("shutdown file: %d events, %v", len(evs), err)
	}
}

func TestHandlerTurnsRecordsIntoEvents(t *testing.T) {
	p, _ := New(&Options{Sender: &fakeSender{}})
	log := slog.New(p.Handler(slog.LevelInfo, "9.9.9")).With("component", "keylatch").WithGroup("g")
	log.Debug("below the level")
	k, err := msp.NewKey("guid-1", strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("key latched", "key", k, "n", 3)
	got := drain(p.mem)
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	e := got[0]
	if e.EventLevel != "WARN" || e.Version != "9.9.9" || e.TaskName != "keylatch" || e.OperationId != ExecutionMode {
		t.Errorf("event = %+v", e)
	}
	if e.Message != "key latched component=keylatch g.key.guid=guid-1 g.n=3" {
		t.Errorf("message = %q", e.Message)
	}
	if strings.Contains(e.Message, strings.Repeat("ab", 32)) {
		t.Errorf("key material in the event: %q", e.Message)
	}
}

func TestLocalVMDataParsers(t *testing.T) {
	if got := osVersion("PRETTY_NAME=\"Debian GNU/Linux 13\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\n"); got != "Linux:Debian GNU/Linux-13" {
		t.Errorf("osVersion = %q", got)
	}
	if got := osVersion(""); got != "Linux:Unknown-Unknown" {
		t.Errorf("osVersion(empty) = %q", got)
	}
	if got := keywordName("amd64"); got != `{"CpuArchitecture":"x86_64"}` {
		t.Errorf("keywordName = %q", got)
	}
}
