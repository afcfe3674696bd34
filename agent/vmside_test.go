package agent_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
)

// TestRunDoesWhatUpstreamDoesOnAVM: besides serving, a running agent
// writes the serial console lines, sends its log as telemetry signed with
// the latched key, snapshots the rules in the log folder, and outside the
// service leaves the CPU quota alone, saying why.
func TestRunDoesWhatUpstreamDoesOnAVM(t *testing.T) {
	testenv.MustBeRoot(t) // the key store insists on a root-owned folder
	host := imdsHost(t, msp.ModeEnforce)
	dir := t.TempDir()
	listen := freeLoopback(t)
	console := filepath.Join(dir, "console")
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var (
		logs testenv.Buffer
		mu   sync.Mutex
		ran  []string
	)
	a, err := agent.New(agent.Config{
		ListenAddr: listen, KeyFolder: filepath.Join(dir, "keys"), LogFolder: filepath.Join(dir, "log"), EventFolder: filepath.Join(dir, "events"),
		PollInterval: 100 * time.Millisecond, NoRedirect: true, ProvisionTimeout: 500 * time.Millisecond, Version: "9.9.9",
		TelemetryInterval: 50 * time.Millisecond, SerialConsole: console,
		Endpoints: map[msp.Endpoint]netip.AddrPort{msp.EndpointWireServer: host.WireServerAddr()},
	}, &agent.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		RunCommand: func(_ context.Context, name string, args ...string) error {
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, name+" "+strings.Join(args, " "))
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s\nlog:\n%s", what, logs.String())
			}
		}
	}
	key := func() string { k, _ := host.LatchedKey(); return k.GUID }
	waitFor("a signed telemetry post", func() bool {
		for _, r := range host.Telemetry() {
			if key() != "" && r.SignatureValid && r.KeyGUID == key() {
				return true
			}
		}
		return false
	})
	var bodies strings.Builder
	for _, r := range host.Telemetry() {
		bodies.Write(r.Body)
	}
	if !strings.Contains(bodies.String(), "GuestProxyAgent (9.9.9) is starting") || !strings.Contains(bodies.String(), `<Param Name="GAVersion" Value="9.9.9"`) {
		t.Errorf("the start-up line is not among the events sent:\n%.2000s", bodies.String())
	}
	readConsole := func() string { b, _ := os.ReadFile(console); return string(b) }
	waitFor("the provisioning console line", func() bool { return strings.Contains(readConsole(), "Failed to start redirector") })
	if !strings.Contains(readConsole(), "azure-proxy-agent_9.9.9(") || !strings.Contains(readConsole(), "============== GuestProxyAgent (9.9.9) is starting on Linux:") {
		t.Errorf("console:\n%s", readConsole())
	}
	waitFor("a rule snapshot", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "log", "AuthorizationRules_*.json"))
		if len(m) == 0 {
			return false
		}
		b, _ := os.ReadFile(m[0])
		return strings.Contains(string(b), `"id":"imds-rules-useLocalFileRules-false"`) // the id as upstream shows it
	})
	waitFor("the CPU quota decision", func() bool { return strings.Contains(logs.String(), "CPU quota not set: ") })
	mu.Lock()
	if len(ran) != 0 {
		t.Errorf("ran %q outside the service", ran)
	}
	mu.Unlock()
}
