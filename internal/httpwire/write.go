package httpwire

import (
	"bufio"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Continue is the interim response to a request with Expect100, written
// before its body is read.
const Continue = "HTTP/1.1 100 Continue\r\n\r\n"

// WriteField writes one field line. The caller vouches for name and value:
// they come from a head this package read, or from the program itself.
func WriteField(w *bufio.Writer, name, value string) {
	w.WriteString(name)
	w.WriteString(": ")
	w.WriteString(value)
	w.WriteString("\r\n")
}

// WriteFieldInt writes a field with a decimal value formatted in w's own
// buffer: strconv.FormatInt allocates for 100 and above, so relaying a
// Content-Length was an allocation per response.
func WriteFieldInt(w *bufio.Writer, name string, value int64) {
	w.WriteString(name)
	w.WriteString(": ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), value, 10))
	w.WriteString("\r\n")
}

// WriteRequestHead writes an HTTP/1.1 request line and hdr exactly as
// given, in order, then the empty line. It adds no field: what a signer
// covered is what goes on the wire. Errors stay in w until its Flush.
func WriteRequestHead(w *bufio.Writer, method, uri string, hdr []msp.HeaderField) {
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(uri)
	w.WriteString(" HTTP/1.1\r\n")
	for _, h := range hdr {
		WriteField(w, h.Name, h.Value)
	}
	w.WriteString("\r\n")
}

// WriteResponse writes a complete response with body, framed by a
// Content-Length it adds, and "Connection: close" when closeConn is set;
// hdr must hold neither. With head set the body is left out, as the answer
// to a HEAD request. It flushes w.
func WriteResponse(w *bufio.Writer, status int, hdr []msp.HeaderField, body []byte, closeConn, head bool) error {
	w.WriteString("HTTP/1.1 ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(status), 10))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(status))
	w.WriteString("\r\n")
	for _, h := range hdr {
		WriteField(w, h.Name, h.Value)
	}
	WriteFieldInt(w, "Content-Length", int64(len(body)))
	if closeConn {
		WriteField(w, "Connection", "close")
	}
	w.WriteString("\r\n")
	if !head {
		w.Write(body)
	}
	return w.Flush()
}

// HeaderFields returns h as field lines sorted by name, as
// http.Header.Write orders them, without the framing fields
// (Content-Length, Transfer-Encoding, Connection) that WriteResponse sets.
// A line break in a value becomes a space, as http.Header.Write makes it,
// so a handler cannot add header lines.
func HeaderFields(h http.Header) []msp.HeaderField {
	names := make([]string, 0, len(h))
	for name := range h {
		switch {
		case strings.EqualFold(name, "Content-Length"), strings.EqualFold(name, "Transfer-Encoding"),
			strings.EqualFold(name, "Connection"):
			continue
		case !validToken(name):
			continue // http.Header.Write drops such names too
		}
		names = append(names, name)
	}
	slices.Sort(names)
	var out []msp.HeaderField
	for _, name := range names {
		for _, v := range h[name] {
			out = append(out, msp.HeaderField{Name: name, Value: lineBreaks.Replace(strings.TrimSpace(v))})
		}
	}
	return out
}

var lineBreaks = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")
