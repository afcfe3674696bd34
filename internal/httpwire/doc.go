// Package httpwire reads and writes HTTP/1.1 message heads on a buffered
// connection, for the parts of gpa that speak HTTP without net/http's
// client or server: the proxy (both sides), the simulated host of
// msp/msptest, the key latch's WireServer client and the --status client.
//
// It is deliberately strict, because the proxy stands between an
// unprivileged caller and the host and the two must never disagree about
// where a message ends. A request head with both Transfer-Encoding and
// Content-Length, with Content-Length headers that disagree, with obsolete
// line folding, with a byte outside visible ASCII in a field value, or
// beyond a size limit is refused with a [RequestError] that carries the
// status to answer; a response head that breaks the same rules is refused
// with an error matching [ErrBadResponse]. Lines end in CRLF or a bare LF;
// a bare CR inside a line is a control byte and refused.
//
// Heads are kept as sent: field names keep their case, fields their order,
// so that what is signed (msp's string to sign covers header lines) is what
// goes on the wire. Reading a head costs a few allocations: the names and
// values are substrings of one string per head.
//
// Bodies are read and written with net/http/httputil's chunked reader and
// writer; nothing here writes another.
//
// [ServeHandler] runs an http.Handler on a parsed request and returns its
// answer buffered, for the few local endpoints (/provision, /metrics, the
// test double's handlers) that are written as handlers.
//
// The package imports only msp and the standard library, so every package
// of the module may use it. It is internal: its API changes with its
// callers.
package httpwire
