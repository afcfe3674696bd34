package proxy

import (
	"time"
)

// Record is the audit record of one request: the ProxySummary fields of
// gpa-protocol §9.2 plus the decision. It never holds key material; the
// command line is redacted by the resolver before it gets here.
type Record struct {
	// Time is when the request head was read. Method and URL are the
	// request line's; ClientIP/ClientPort the accepted socket's peer; IP and
	// Port the original destination ("None" and 0 when the caller is
	// unknown); the user and process fields come from the caller's claims
	// ("empty" when unknown).
	Time            time.Time `json:"time"`
	Method          string    `json:"method"`
	URL             string    `json:"url"`
	ClientIP        string    `json:"clientIp"`
	ClientPort      uint16    `json:"clientPort"`
	IP              string    `json:"ip"`
	Port            uint16    `json:"port"`
	UserID          uint32    `json:"userId"`
	UserName        string    `json:"userName"`
	UserGroups      []string  `json:"userGroups"`
	ProcessFullPath string    `json:"processFullPath"`
	ProcessCmdLine  string    `json:"processCmdLine"`
	RunAsElevated   bool      `json:"runAsElevated"`
	// ResponseStatus is the status the client got, as "403 Forbidden".
	ResponseStatus string `json:"responseStatus"`
	// StatusCode is the numeric form of ResponseStatus.
	StatusCode int `json:"statusCode"`
	// ElapsedTime is the time the proxy spent on the request in
	// milliseconds, as upstream reports it; ElapsedMicros is finer.
	ElapsedTime   int64 `json:"elapsedTime"`
	ElapsedMicros int64 `json:"elapsedMicros"`
	// Decision is "allow", "audit" (denied by the rules, forwarded because
	// the endpoint is in Audit mode), "deny", or "" when the request never
	// reached authorization (malformed, local endpoint, unknown caller).
	Decision string `json:"decision"`
	// Rule is the rule-set id that decided, Reason why.
	Rule      string `json:"rule"`
	Reason    string `json:"reason,omitempty"`
	Privilege string `json:"privilege,omitempty"`
	Identity  string `json:"identity,omitempty"`
	Endpoint  string `json:"endpoint"`
	Mode      string `json:"mode,omitempty"`
	// Epoch is the latch snapshot the request was decided and signed under;
	// Signed says whether it carried a signature upstream.
	Epoch  uint64 `json:"epoch"`
	Signed bool   `json:"signed"`
	// Retried says the host refused the first signature (401) and the
	// request was signed again under a newer key and sent once more.
	Retried bool `json:"retried,omitempty"`
	// Forwarded says whether the request reached the host endpoint.
	Forwarded    bool   `json:"forwarded"`
	ErrorDetails string `json:"errorDetails,omitempty"`
}

// FailedAuthorization reports whether the record belongs in the
// failed-authorization summary: denied or audited by the rules, or from a
// connection whose caller is unknown.
func (r *Record) FailedAuthorization() bool {
	return r.Decision == "deny" || r.Decision == "audit" || r.StatusCode == 421
}

// SummarySink receives every audit record, for aggregation into the
// status.json summaries. Add is called synchronously on the request path, so
// it must be quick, must not keep rec, and must be safe for concurrent use.
type SummarySink interface {
	Add(rec *Record)
}
