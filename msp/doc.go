// Package msp is the vocabulary and pure logic of the Azure Metadata
// Security Protocol, as the guest side speaks it: the protected host
// endpoints, modes and default access, caller claims, the access-control
// rules model with its validation, the evaluator that decides a request, the
// canonical request form used for matching, and the HMAC-SHA256 signer and
// verifier with the exact string to sign.
//
// It is written for anyone who builds a guest agent, a simulated host or a
// policy tool: it does no I/O and imports only the standard library, so the
// same code signs in the agent and verifies in tests.
//
// # Matchers
//
// Two matchers decide whether a request falls under a privilege. The
// canonical matcher (the default) decodes once, resolves dot segments and
// matrix parameters, matches paths segment by segment, and denies what it
// cannot canonicalise. The legacy matcher reproduces the upstream agent's
// decisions exactly, string-prefix paths included, for users who migrate and
// need identical behaviour. MatcherShadow runs both and reports where they
// disagree.
//
// # Sharp edges
//
// Sign exactly what goes on the wire. The signature covers every header
// line of the request, so a transport that adds a header after signing
// (Go's http.Transport adds User-Agent and Accept-Encoding) makes the host
// reject it. Build the Message from the head you will write.
//
// A Key's secret never leaves this package except through MarshalKeyFile,
// which exists for the key store: String, GoString, Format and LogValue
// print only the GUID.
package msp
