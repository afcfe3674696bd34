// Package policy turns audit logs into rule sets and rule sets into
// predictions: the tools for the Audit → learn → simulate → Enforce
// rollout of MSP.
//
// Simulate answers "what would this rule set do to the traffic I actually
// have?": a Simulator decides a request with the canonical and the legacy
// matcher side by side, and Replay runs a whole audit log through a
// candidate rule set and groups what would change. Learn writes the
// smallest readable allow-list for an audit log: one identity per caller,
// privileges collapsed segment by segment (never by string prefix), roles
// for privileges used together, default access Deny.
//
// It is meant for operators' tools and CI gates (examples/msp-policy), not
// for the agent's hot path. Like msp it does no I/O beyond the readers it is
// handed, and imports only msp and the standard library.
//
// The sharp edge: a learned rule set allows exactly what the log shows. A
// caller that did not run during the audit window is denied once enforced,
// so audit long enough to see every job, and replay before enforcing.
package policy
