package metrics_test

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/metadatasec/gpa/agent/metrics"
	"github.com/metadatasec/gpa/msp"
)

// The proxy's series on a registry of the embedder's own.
func ExampleNewProxy() {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewProxy(reg)
	if err != nil {
		panic(err)
	}
	m.UpstreamError(msp.EndpointIMDS, "timeout")
	fmt.Println(testutil.CollectAndCount(reg, "gpa_proxy_upstream_errors_total"))
	// Output: 1
}
