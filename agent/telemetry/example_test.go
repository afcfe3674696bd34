package telemetry_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/metadatasec/gpa/agent/telemetry"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// A pipeline that posts the agent's warnings to a simulated WireServer,
// signed with the latched key.
func Example() {
	host := msptest.NewHost(nil)
	defer host.Close()
	key, _ := msp.NewKey("5a2c8e1e-0b7f-4a3e-9d3e-1f2a3b4c5d6e", strings.Repeat("0f", 32))
	host.LatchKey(key)
	signer, _ := msp.NewSigner(key)

	p, err := telemetry.New(&telemetry.Options{
		Sender:        keylatch.NewClient(&keylatch.ClientOptions{Addr: host.WireServerAddr()}),
		Signer:        func() *msp.Signer { return signer },
		FlushInterval: 10 * time.Millisecond, // upstream: a minute
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)

	log := slog.New(p.Handler(slog.LevelInfo, "1.0.0"))
	log.Warn("eBPF redirector failed", "err", "no BTF")

	for len(host.Telemetry()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	sent := host.Telemetry()[0]
	fmt.Println("signed with the latched key:", sent.SignatureValid && sent.KeyGUID == key.GUID)
	fmt.Println(strings.Contains(string(sent.Body), `<Param Name="Context1" Value="eBPF redirector failed err=no BTF" T="mt:wstr" />`))
	// Output:
	// signed with the latched key: true
	// true
}
