// Package msptest runs a simulated Azure metadata host for tests: WireServer
// (with the secure-channel key protocol), the HostGAPlugin and IMDS, each on
// its own listener.
//
// It is to the metadata host what net/http/httptest is to an HTTP server:
// NewHost starts it on loopback ports (or on listeners the caller supplies,
// for example the real metadata addresses on the lo of a network namespace
// the test created), Close stops it, and Requests returns every request it
// saw, with the header lines exactly as they came over the wire and whether
// their signature verified.
//
// The intended caller is a test of an agent, a proxy or a client that talks
// to the host: the package's own keylatch and proxy tests, and anyone
// embedding their own agent. Operator controls (ResetKey, SetModes,
// SetRules, SetStatusVersion, SetFault) let a test play the part of ARM and of
// a misbehaving host.
//
// The host reads each request head itself instead of using net/http's
// server, because net/http moves Host out of the header map and
// canonicalises names: MSP signatures cover the head as sent, so the
// verifier must see the bytes as sent.
//
// Sharp edge: the host knows every key it issued, and IssuedKeys and
// LatchedKey hand them out in clear so tests can sign and verify. Never use
// this package outside tests, and never log what those methods return.
package msptest
