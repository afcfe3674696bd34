package proxy

import "github.com/metadatasec/gpa/msp"

// SummarySink receives every audit record, for aggregation into the
// status.json summaries. Add is called synchronously on the request path, so
// it must be quick, must not keep rec, and must be safe for concurrent use.
type SummarySink interface {
	Add(rec *msp.AuditRecord)
}
