package httpwire

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// fieldError is why a header section was refused.
type fieldError int

const (
	fieldLineTooLong fieldError = iota + 1
	fieldBlockTooLarge
	fieldFolded
	fieldMalformed
	fieldBadValue
)

func (e fieldError) Error() string {
	switch e {
	case fieldLineTooLong:
		return "header line too long"
	case fieldBlockTooLarge:
		return "header block too large"
	case fieldFolded:
		return "obsolete header line folding"
	case fieldMalformed:
		return "malformed header line"
	case fieldBadValue:
		return "header value is not visible ASCII"
	}
	return "bad header section"
}

// fieldRules say what readFields accepts.
type fieldRules struct {
	// maxBytes bounds the head's bytes, the ones counted before included;
	// maxFields bounds the number of field lines.
	maxBytes, maxFields int
	// obsText allows bytes 0x80 and above in values, as responses may
	// carry them.
	obsText bool
	// rawValues keeps the whitespace after a value.
	rawValues bool
}

// noFieldLimit is a maxFields for a head bounded by its size alone.
const noFieldLimit = math.MaxInt

// readFields reads the field lines of a request or response head up to
// the empty line. They are copied into one buffer, after prefix, that
// becomes one string, and names and values are substrings of it: one
// allocation for the whole section instead of two or three per field.
// used counts the head's bytes read so far against rules.maxBytes; the
// new count is returned. The fields are appended to dst[:0], so a caller
// that reads many heads reuses one slice.
func readFields(br *bufio.Reader, prefix []byte, used int, rules fieldRules, dst []msp.HeaderField) (string, []msp.HeaderField, int, error) {
	type span struct{ name, value, end int }
	var (
		spanBuf [24]span
		spans   = spanBuf[:0]
		arena   = append(make([]byte, 0, 512), prefix...)
	)
	for {
		line, err := readLine(br, rules.maxBytes)
		if err == ErrLineTooLong {
			return "", nil, 0, fieldLineTooLong
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", nil, 0, err
		}
		if len(line) == 0 {
			break
		}
		if used += len(line) + 2; used > rules.maxBytes || len(spans) >= rules.maxFields {
			return "", nil, 0, fieldBlockTooLarge
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "", nil, 0, fieldFolded
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validToken(line[:colon]) {
			return "", nil, 0, fieldMalformed
		}
		value := line[colon+1:]
		for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
			value = value[1:]
		}
		for !rules.rawValues && len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
			value = value[:len(value)-1]
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f || c > 0x7f && !rules.obsText {
				return "", nil, 0, fieldBadValue
			}
		}
		sp := span{name: len(arena)}
		arena = append(arena, line[:colon]...)
		sp.value = len(arena)
		arena = append(arena, value...)
		sp.end = len(arena)
		spans = append(spans, sp)
	}
	block := string(arena)
	fields := slices.Grow(dst[:0], len(spans))
	if fields == nil {
		fields = []msp.HeaderField{} // a head without fields has an empty, not a nil, list
	}
	for _, sp := range spans {
		fields = append(fields, msp.HeaderField{Name: block[sp.name:sp.value], Value: block[sp.value:sp.end]})
	}
	return block, fields, used, nil
}

func validToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// parseContentLength accepts only plain decimal digits (RFC 9110 §8.6),
// at most 18 of them so that the value cannot overflow.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// appendConnTokens appends the options of a Connection field value,
// trimmed and without empty ones, in the case the sender used.
func appendConnTokens(tokens []string, value string) []string {
	for t := range strings.SplitSeq(value, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	return tokens
}

// HasToken reports whether tokens (Connection options) name name, in any
// case. The fields a Connection header names are hop-by-hop.
func HasToken(tokens []string, name string) bool {
	for _, t := range tokens {
		if strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// get returns the value of the first field named name, in any case, as
// http.Header.Get does.
func get(fields []msp.HeaderField, name string) (string, bool) {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}
