package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/proxy"
)

// A proxy in front of a stand-in IMDS, with a static resolver: what a test
// of an agent component looks like.
func ExampleServer() {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "claims %s", r.Header.Get(msp.HeaderClaims))
	}))
	defer imds.Close()

	key, _ := msp.NewKey("6f1b2c9e-0000-4000-8000-000000000001", "4A404E635266556A586E3272357538782F413F4428472B4B6250645367566B59")
	signer, _ := msp.NewSigner(key)
	snap := &keylatch.Snapshot{Epoch: 1, State: "WireServer Enforce -  IMDS Enforce - HostGA Enforce", Key: key, Signer: signer}

	srv, err := proxy.New(proxy.Config{
		Resolver: &proxy.StaticResolver{Caller: &proxy.Caller{
			OriginalDst: msp.IMDSAddr,
			Claims:      msp.Claims{UserName: "alice", UserID: 1000},
		}},
		Latch: proxy.SnapshotFunc(func() *keylatch.Snapshot { return snap }),
		// Send what would go to IMDS to the stand-in on loopback.
		Dial: func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", imds.Listener.Addr().String())
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(context.Background(), ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	resp, err := http.Get("http://" + ln.Addr().String() + "/metadata/instance?api-version=2021-02-01")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, resp.Header.Get(msp.HeaderAuthorization))
	fmt.Println(string(body))
	// Output:
	// 200 value
	// claims { "isRoot": "false"}
}

// Redaction of a command line before it reaches the audit log.
func ExampleRedactCmdline() {
	fmt.Println(proxy.RedactCmdline([]string{"az", "login", "--password", "hunter2"}))
	fmt.Println(proxy.RedactCmdline([]string{"curl", "https://a.blob.core.windows.net/c?sv=1&sig=abc"}))
	// Output:
	// az login --password [REDACTED]
	// curl https://a.blob.core.windows.net/c?sv=1&sig=[REDACTED]
}
