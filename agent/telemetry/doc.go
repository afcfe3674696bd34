// Package telemetry is the agent's telemetry event pipeline, upstream's
// (GuestProxyAgent doc/TelemetryEventFlow.md) in Go: events are queued in
// memory, moved every minute to a bounded send queue (or, when that is
// full, to upstream's N.json files in the event folder), read back from
// disk every five minutes, and posted to WireServer in TelemetryData XML
// batches under 64 KiB.
//
// It is for the agent package, which feeds it from its slog records; an
// embedder can run a Pipeline of its own with any Sender.
//
// The sharp edges: every stage is bounded (1000 events in memory, 1000 in
// the send queue, maxEventFileCount files, 4 KiB per message, five tries
// per batch), and what does not fit is dropped, never waited for: Write
// never blocks, so a host that is down costs the proxy nothing but lost
// events. The pipeline's own diagnostics go to Options.Logger, which must
// not feed the pipeline back (the agent passes its logger without the
// event handler).
package telemetry
