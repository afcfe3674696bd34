package policy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// ErrBadAuditLog marks an audit log that cannot be read.
var ErrBadAuditLog = errors.New("policy: bad audit log")

// AuditRecord is one request as the proxy's connection log records it: the
// ProxySummary fields of gpa-protocol §9.2 plus the decision and rule. The
// JSON names are the log's.
type AuditRecord struct {
	Method          string   `json:"method"`
	URL             string   `json:"url"`
	ClientIP        string   `json:"clientIp,omitempty"`
	ClientPort      uint16   `json:"clientPort,omitempty"`
	IP              string   `json:"ip"`
	Port            uint16   `json:"port"`
	UserID          uint32   `json:"userId"`
	UserName        string   `json:"userName"`
	UserGroups      []string `json:"userGroups,omitempty"`
	ProcessFullPath string   `json:"processFullPath"`
	ProcessCmdLine  string   `json:"processCmdLine,omitempty"`
	RunAsElevated   bool     `json:"runAsElevated"`
	ResponseStatus  Status   `json:"responseStatus,omitempty"`
	StatusCode      int      `json:"statusCode,omitempty"`
	ElapsedTime     int64    `json:"elapsedTime,omitempty"`
	// Decision is what the agent did: allow, audit or deny.
	Decision string `json:"decision,omitempty"`
	Rule     string `json:"rule,omitempty"`
}

// Endpoint classifies the record's original destination.
func (r *AuditRecord) Endpoint() msp.Endpoint {
	a, err := netip.ParseAddr(r.IP)
	if err != nil {
		return msp.EndpointNone
	}
	return msp.Classify(netip.AddrPortFrom(a, r.Port))
}

// Claims rebuilds the caller's claims from the record.
func (r *AuditRecord) Claims() *msp.Claims {
	name := r.ProcessFullPath
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return &msp.Claims{UserID: r.UserID, UserName: r.UserName, UserGroups: r.UserGroups,
		ProcessName: name, ProcessFullPath: r.ProcessFullPath, ProcessCmdLine: r.ProcessCmdLine,
		RunAsElevated: r.RunAsElevated}
}

// Request returns the record as an evaluator request. Absolute-form URLs
// are reduced to their request target.
func (r *AuditRecord) Request() *msp.Request {
	return &msp.Request{Method: r.Method, RawURI: requestTarget(r.URL), Claims: r.Claims()}
}

// ActualVerdict is the decision the agent recorded, from Decision or, for
// older logs without it, from the status (403 means denied).
func (r *AuditRecord) ActualVerdict() msp.Verdict {
	switch strings.ToLower(r.Decision) {
	case "allow":
		return msp.VerdictAllow
	case "audit", "allowaudited", "okwithaudit":
		return msp.VerdictAllowAudited
	case "deny", "forbidden":
		return msp.VerdictDeny
	}
	if r.ResponseStatus == 403 || r.StatusCode == 403 {
		return msp.VerdictDeny
	}
	return msp.VerdictAllow
}

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

// ReadAuditLog reads JSON lines. Each line is either a record or an object
// that wraps one in "message" or "summary" (as log shippers do). Blank lines
// are skipped; a malformed line is an error naming its line number, because
// a policy learned from a partly read log would be silently too narrow.
func ReadAuditLog(r io.Reader) ([]AuditRecord, error) {
	var out []AuditRecord
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		rec, err := parseRecord([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadAuditLog, n, err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadAuditLog, err)
	}
	return out, nil
}

func parseRecord(b []byte) (AuditRecord, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return AuditRecord{}, err
	}
	for _, k := range []string{"summary", "message"} {
		if inner, ok := probe[k]; ok && len(inner) > 0 && inner[0] == '{' {
			b = inner
			break
		}
	}
	var rec AuditRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return AuditRecord{}, err
	}
	if rec.Method == "" || rec.URL == "" {
		return AuditRecord{}, errors.New("record without method or url")
	}
	return rec, nil
}

// Status is an HTTP status in a log: upstream writes a number, our proxy
// the status line ("403 Forbidden"); both decode to the code.
type Status int

// UnmarshalJSON accepts 403, "403" and "403 Forbidden".
func (s *Status) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*s = Status(n)
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("responseStatus: %w", err)
	}
	code, _, _ := strings.Cut(strings.TrimSpace(str), " ")
	if code == "" {
		*s = 0
		return nil
	}
	if _, err := fmt.Sscanf(code, "%d", &n); err != nil {
		return fmt.Errorf("responseStatus %q is not a status", str)
	}
	*s = Status(n)
	return nil
}
