package agenttest_test

import (
	"fmt"
	"testing"

	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/msp"
)

// A test that starts the agent, waits for provisioning and asks IMDS as
// nobody from the callers' cgroup. It needs root and agenttest.Main in the
// package's TestMain, so it is shown, not run.
func Example() {
	_ = func(t *testing.T) {
		env := agenttest.New(t, &agenttest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
			msp.EndpointIMDS: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "example"},
		}})
		agent := env.StartProvisioned(t)
		res := env.Get(t, agenttest.Nobody, "http://169.254.169.254/metadata/instance", map[string]string{"Metadata": "true"})
		for _, r := range env.Host.Requests() {
			if !r.SecureChannel && !r.SignatureValid {
				t.Errorf("unsigned request reached the host: %s", r.RawURI)
			}
		}
		agent.Kill(t)
		fmt.Println(res.Status)
	}
}
