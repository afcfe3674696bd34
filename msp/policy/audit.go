package policy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// ErrBadAuditLog marks an audit log that cannot be read.
var ErrBadAuditLog = errors.New("policy: bad audit log")

// ReadAuditLog reads the agent's connection log (msp.AuditRecord lines). Each line is either a record or an object
// that wraps one in "message" or "summary" (as log shippers do). Blank lines
// are skipped; a malformed line is an error naming its line number, because
// a policy learned from a partly read log would be silently too narrow.
func ReadAuditLog(r io.Reader) ([]msp.AuditRecord, error) {
	var out []msp.AuditRecord
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

// parseRecord reads a record, a wrapper of one, or a JSON string holding
// either (a RawData cell of a Log Analytics custom text log).
func parseRecord(b []byte) (msp.AuditRecord, error) {
	if len(b) > 0 && b[0] == '"' {
		var line string
		if err := json.Unmarshal(b, &line); err != nil {
			return msp.AuditRecord{}, err
		}
		b = []byte(line)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return msp.AuditRecord{}, err
	}
	for _, k := range []string{"RawData", "rawData"} {
		if inner, ok := probe[k]; ok && len(inner) > 0 && inner[0] == '"' {
			return parseRecord(inner)
		}
	}
	for _, k := range []string{"summary", "message"} {
		if inner, ok := probe[k]; ok && len(inner) > 0 && inner[0] == '{' {
			b = inner
			break
		}
	}
	var rec msp.AuditRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return msp.AuditRecord{}, err
	}
	if rec.Method == "" || rec.URL == "" {
		return msp.AuditRecord{}, errors.New("record without method or url")
	}
	return rec, nil
}
