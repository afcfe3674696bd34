package msp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The connection log's record is defined once, here: the proxy writes it
// with AppendJSON, msp/policy reads it with UnmarshalJSON, and a test holds
// the two together.

// AuditRecord is the audit record of one request, one JSON line of the
// agent's connection log (ProxyAgent.Connection.log): upstream's
// ProxySummary fields plus the decision. It never holds key material; the
// command line is redacted by the resolver before it gets here.
type AuditRecord struct {
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
func (r *AuditRecord) FailedAuthorization() bool {
	return r.Decision == "deny" || r.Decision == "audit" || r.StatusCode == 421
}

// UnmarshalJSON reads a record as the agent writes it and as upstream and
// older versions did: responseStatus may be a number (403), a string of one
// ("403") or a status line ("403 Forbidden"); statusCode, when absent, is
// taken from it.
func (r *AuditRecord) UnmarshalJSON(b []byte) error {
	type plain AuditRecord
	var w struct {
		*plain
		ResponseStatus json.RawMessage `json:"responseStatus"`
	}
	w.plain = (*plain)(r)
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	r.ResponseStatus = ""
	if len(w.ResponseStatus) == 0 || string(w.ResponseStatus) == "null" {
		return nil
	}
	var code int
	if err := json.Unmarshal(w.ResponseStatus, &code); err == nil {
		r.ResponseStatus = strconv.Itoa(code)
	} else {
		if err := json.Unmarshal(w.ResponseStatus, &r.ResponseStatus); err != nil {
			return fmt.Errorf("responseStatus: %w", err)
		}
		num, _, _ := strings.Cut(strings.TrimSpace(r.ResponseStatus), " ")
		if num != "" {
			if code, err = strconv.Atoi(num); err != nil {
				return fmt.Errorf("responseStatus %q is not a status", r.ResponseStatus)
			}
		}
	}
	if r.StatusCode == 0 {
		r.StatusCode = code
	}
	return nil
}

// Destination classifies the record's original destination.
func (r *AuditRecord) Destination() Endpoint {
	a, err := netip.ParseAddr(r.IP)
	if err != nil {
		return EndpointNone
	}
	return Classify(netip.AddrPortFrom(a, r.Port))
}

// Claims rebuilds the caller's claims from the record.
func (r *AuditRecord) Claims() *Claims {
	name := r.ProcessFullPath
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return &Claims{UserID: r.UserID, UserName: r.UserName, UserGroups: r.UserGroups,
		ProcessName: name, ProcessFullPath: r.ProcessFullPath, ProcessCmdLine: r.ProcessCmdLine,
		RunAsElevated: r.RunAsElevated}
}

// Request returns the record as an evaluator request. Absolute-form URLs
// are reduced to their request target.
func (r *AuditRecord) Request() *Request {
	return &Request{Method: r.Method, RawURI: requestTarget(r.URL), Claims: r.Claims()}
}

// Verdict is the decision the agent recorded, from Decision or, for older
// logs without it, from the status (403 means denied).
func (r *AuditRecord) Verdict() Verdict {
	switch strings.ToLower(r.Decision) {
	case "allow":
		return VerdictAllow
	case "audit", "allowaudited", "okwithaudit":
		return VerdictAllowAudited
	case "deny", "forbidden":
		return VerdictDeny
	}
	if r.StatusCode == 403 {
		return VerdictDeny
	}
	return VerdictAllow
}

// requestTarget is the origin-form target of a logged URL.
func requestTarget(u string) string {
	if strings.HasPrefix(u, "/") {
		return u
	}
	if _, rest, ok := strings.Cut(u, "://"); ok {
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			if rest[i] == '?' {
				return "/" + rest[i:]
			}
			return rest[i:]
		}
		return "/"
	}
	return u
}

// AppendJSON appends rec as encoding/json would encode it (same field
// order, omitempty rules, escaping and time format) without reflection: the
// record is written for every request, and reflection-based encoding was a
// tenth of the proxy's CPU under load. TestAuditRecordJSONMatchesEncodingJSON
// holds the two together.
func (rec *AuditRecord) AppendJSON(b []byte) []byte {
	return rec.AppendJSONCaller(b, nil)
}

// AppendCallerJSON appends the fields of rec that describe the connection
// and its caller, clientIp to runAsElevated, as AppendJSON writes them,
// starting with the comma before "clientIp". They are the same for every
// request of a connection: a writer encodes them once and hands them to
// AppendJSONCaller.
func (rec *AuditRecord) AppendCallerJSON(b []byte) []byte {
	b = append(b, `,"clientIp":`...)
	b = appendJSONString(b, rec.ClientIP)
	b = append(b, `,"clientPort":`...)
	b = strconv.AppendUint(b, uint64(rec.ClientPort), 10)
	b = append(b, `,"ip":`...)
	b = appendJSONString(b, rec.IP)
	b = append(b, `,"port":`...)
	b = strconv.AppendUint(b, uint64(rec.Port), 10)
	b = append(b, `,"userId":`...)
	b = strconv.AppendUint(b, uint64(rec.UserID), 10)
	b = append(b, `,"userName":`...)
	b = appendJSONString(b, rec.UserName)
	b = append(b, `,"userGroups":`...)
	if rec.UserGroups == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, g := range rec.UserGroups {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, g)
		}
		b = append(b, ']')
	}
	b = append(b, `,"processFullPath":`...)
	b = appendJSONString(b, rec.ProcessFullPath)
	b = append(b, `,"processCmdLine":`...)
	b = appendJSONString(b, rec.ProcessCmdLine)
	b = append(b, `,"runAsElevated":`...)
	return strconv.AppendBool(b, rec.RunAsElevated)
}

// AppendJSONCaller is AppendJSON with the connection and caller fields
// taken from caller, what AppendCallerJSON gave for a record whose fields
// are rec's; a nil caller encodes them from rec.
func (rec *AuditRecord) AppendJSONCaller(b, caller []byte) []byte {
	b = append(b, `{"time":"`...)
	b = rec.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","method":`...)
	b = appendJSONString(b, rec.Method)
	b = append(b, `,"url":`...)
	b = appendJSONString(b, rec.URL)
	if caller == nil {
		b = rec.AppendCallerJSON(b)
	} else {
		b = append(b, caller...)
	}
	b = append(b, `,"responseStatus":`...)
	b = appendJSONString(b, rec.ResponseStatus)
	b = append(b, `,"statusCode":`...)
	b = strconv.AppendInt(b, int64(rec.StatusCode), 10)
	b = append(b, `,"elapsedTime":`...)
	b = strconv.AppendInt(b, rec.ElapsedTime, 10)
	b = append(b, `,"elapsedMicros":`...)
	b = strconv.AppendInt(b, rec.ElapsedMicros, 10)
	b = append(b, `,"decision":`...)
	b = appendJSONString(b, rec.Decision)
	b = append(b, `,"rule":`...)
	b = appendJSONString(b, rec.Rule)
	b = appendOptString(b, `,"reason":`, rec.Reason)
	b = appendOptString(b, `,"privilege":`, rec.Privilege)
	b = appendOptString(b, `,"identity":`, rec.Identity)
	b = append(b, `,"endpoint":`...)
	b = appendJSONString(b, rec.Endpoint)
	b = appendOptString(b, `,"mode":`, rec.Mode)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendUint(b, rec.Epoch, 10)
	b = append(b, `,"signed":`...)
	b = strconv.AppendBool(b, rec.Signed)
	if rec.Retried {
		b = append(b, `,"retried":true`...)
	}
	b = append(b, `,"forwarded":`...)
	b = strconv.AppendBool(b, rec.Forwarded)
	b = appendOptString(b, `,"errorDetails":`, rec.ErrorDetails)
	return append(b, '}')
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendJSONString(append(b, key...), s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s the way encoding/json does by default: HTML
// characters, control characters and U+2028/U+2029 escaped, invalid UTF-8
// replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
