package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/prometheus/client_golang/prometheus"
)

// A custom agent: the whole agent inside another program, with an audit
// sink and a metrics registry of its own. MY_AGENT_DIR holds its keys and
// status.json; MY_AGENT_CGROUP is the cgroup whose processes it serves (the
// whole machine when empty, as the service does). It runs until Ctrl-C.
func Example_customAgent() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir := os.Getenv("MY_AGENT_DIR")
	reg := prometheus.NewRegistry()
	a, err := agent.New(agent.Config{
		KeyFolder:    filepath.Join(dir, "keys"),
		StatusFolder: dir,
		CgroupPath:   os.Getenv("MY_AGENT_CGROUP"),
	}, &agent.Options{
		Metrics: reg,
		OnAudit: func(r *msp.AuditRecord) {
			fmt.Printf("audit: uid %d %s %s: %s %d\n", r.UserID, r.Method, r.URL, r.Decision, r.StatusCode)
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := a.Run(ctx); err != nil {
		log.Fatal(err)
	}
	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "gpa_proxy_requests_total" {
			for _, m := range f.GetMetric() {
				fmt.Printf("requests with status %s: %v\n", m.GetLabel()[0].GetValue(), m.GetCounter().GetValue())
			}
		}
	}
}

// signingTransport signs every request it sends with the latched key, as
// the agent's proxy does, so that an existing http.Client can call the
// host endpoints itself. It signs exactly what goes on the wire: the
// transport would add User-Agent and Accept-Encoding when absent, so both
// are set before signing.
type signingTransport struct {
	latch *keylatch.Latcher
	base  http.RoundTripper
}

func (t *signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	snap := t.latch.Current()
	if snap.Signer == nil {
		return nil, fmt.Errorf("no key latched (%s)", snap.State)
	}
	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", "my-agent/1.0")
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set(msp.HeaderClaims, msp.ClaimsHeaderValue(os.Geteuid() == 0))
	req.Header.Set(msp.HeaderDate, msp.FormatDate(t.latch.HostNow()))
	m := msp.Message{Method: req.Method, RawURI: req.URL.RequestURI(),
		Header: []msp.HeaderField{{Name: "Host", Value: req.URL.Host}}}
	for name, vs := range req.Header {
		for _, v := range vs {
			m.Header = append(m.Header, msp.HeaderField{Name: name, Value: v})
		}
	}
	auth, err := snap.Signer.Sign(&m)
	if err != nil {
		return nil, err
	}
	req.Header.Set(msp.HeaderAuthorization, auth)
	return t.base.RoundTrip(req)
}

// Just the signer: latch a key with package keylatch and sign the
// requests of an existing Go HTTP client with it, without the agent's
// proxy. A simulated host stands in for WireServer and IMDS here.
func Example_signerOnly() {
	host := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "imds"}}})
	defer host.Close()
	dir, _ := os.MkdirTemp("", "signer-example")
	defer os.RemoveAll(dir)
	store, err := keylatch.OpenStore(&keylatch.StoreOptions{Dir: filepath.Join(dir, "keys"), Owner: uint32(os.Geteuid())})
	if err != nil {
		log.Fatal(err)
	}
	latcher, err := keylatch.NewLatcher(&keylatch.LatcherOptions{
		Client: keylatch.NewClient(&keylatch.ClientOptions{Addr: host.WireServerAddr()}), Store: store})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		latcher.Run(ctx)
	}()
	// The loop writes its state in the key folder: it ends before the
	// folder goes.
	defer func() {
		cancel()
		<-done
	}()
	if latcher.WaitKnown(ctx).Signer == nil {
		log.Fatal("no key latched")
	}

	client := &http.Client{Transport: &signingTransport{latch: latcher, base: http.DefaultTransport}}
	req, _ := http.NewRequestWithContext(ctx, "GET", host.IMDSURL()+"/metadata/instance?api-version=2021-02-01", nil)
	req.Header.Set("Metadata", "true")
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	seen := host.RequestsTo("GET", "/metadata/instance")
	fmt.Println(resp.StatusCode, len(bytes.TrimSpace(body)) > 0)
	fmt.Println("host saw a valid signature:", len(seen) == 1 && seen[0].SignatureValid, strings.TrimSpace(seen[0].SignatureError))
	// Output:
	// 200 true
	// host saw a valid signature: true
}
