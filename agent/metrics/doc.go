// Package metrics holds the agent's Prometheus series: the proxy's request,
// latency, upstream-error, key-epoch and connection series, registered on
// a prometheus.Registerer the caller chooses.
//
// It exists so that package proxy measures through its small
// [proxy.Metrics] interface and links no metrics library: an embedder who
// wants no Prometheus gets none, and one who has a registry of its own
// passes it here (or to agent.Options.Metrics) instead of serving ours.
//
// It imports only msp and Prometheus, so proxy's own tests can use it.
package metrics
