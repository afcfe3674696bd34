package msptest_test

import (
	"fmt"
	"io"
	"net/http"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// A test starts a host on loopback, points its client at WireServerURL and
// checks what the host saw.
func ExampleNewHost() {
	h := msptest.NewHost(&msptest.Options{
		Rules: map[msp.Endpoint]*msp.AuthorizationItem{
			msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "ws-rules"},
		},
	})
	defer h.Close()

	req, _ := http.NewRequest("GET", h.WireServerURL()+"/machine?comp=goalstate", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	fmt.Println("unsigned goal state in Enforce:", resp.StatusCode)
	for _, r := range h.Requests() {
		fmt.Println(r.Endpoint, r.Method, r.RawURI, "signed:", r.Signed)
	}
	// Output:
	// unsigned goal state in Enforce: 401
	// wireserver GET /machine?comp=goalstate signed: false
}

// Faults make the host misbehave for a number of requests.
func ExampleHost_SetFault() {
	h := msptest.NewHost(nil)
	defer h.Close()
	h.SetFault(msptest.Fault{
		Kind:     msptest.FaultStatus,
		Endpoint: msp.EndpointWireServer,
		Path:     "/secure-channel/status",
		Status:   http.StatusServiceUnavailable,
		Count:    1,
	})
	for range 2 {
		resp, err := http.Get(h.WireServerURL() + "/secure-channel/status")
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	// Output:
	// 503
	// 200
}
