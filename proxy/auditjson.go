package proxy

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends rec as encoding/json would encode it (same field
// order, omitempty rules, escaping and time format) without reflection: the
// record is written for every request, and reflection-based encoding was a
// tenth of the proxy's CPU under load. TestRecordJSONMatchesEncodingJSON
// holds the two together.
func (rec *Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = rec.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","method":`...)
	b = appendJSONString(b, rec.Method)
	b = append(b, `,"url":`...)
	b = appendJSONString(b, rec.URL)
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
	b = strconv.AppendBool(b, rec.RunAsElevated)
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
