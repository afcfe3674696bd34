// Package keylatch latches and keeps the one long-lived HMAC key the guest
// agent's trust rests on, and publishes what it knows as immutable
// snapshots.
//
// It has four parts:
//
//   - Client speaks the WireServer secure-channel protocol
//     (docs/protocol.md §2.1–§2.2) with exactly upstream's header lines, parses
//     the status (JSON or XML, §2.3) and keeps the host clock (§2.6).
//   - Store keeps keys on disk as <guid>.key (§2.4, §2.8) in a root-only
//     folder, written atomically and durably, and beside them
//     latch-state.json (LatchState): what the latcher last knew, with no
//     key material. PruneKeys bounds the key files refused attestations
//     leave. The provisioning tag files of §7.2 in the same folder belong
//     to package status.
//   - Latcher runs the polling state machine of §2.6–§2.7 and publishes a
//     Snapshot (state string, compiled rules, key, incarnation, epoch) each
//     time something changes. RedirectSet derives the eBPF redirect set
//     from a snapshot, so the redirect and the proxy follow one source.
//     While a key cannot be latched, the snapshot stays "Unknown" (nothing
//     redirected, nothing signed) but carries the status's rules, so a
//     redirect still pinned from an earlier run is authorized by them.
//     After a restart the latcher first publishes the stored LatchState
//     (Snapshot.Restored: the stored key and modes) until the host answers;
//     docs/restart-state.md says what it trusts from disk and why.
//   - The local rules files of §4.8 (ApplyLocalRules and friends).
//
// The intended caller is the agent's main package, which wires
// Latcher.Current into the proxy, a RedirectPolicy to the eBPF policy map,
// and OnStatus/OnLatched to status reporting and provisioning; tests run a
// Latcher against msp/msptest.
//
// Sharp edge: the key never leaves the store in clear text except to sign.
// Snapshot.Key holds the secret; pass snapshots around, but never marshal,
// log or copy the key anywhere else (msp.Key redacts itself in fmt and
// slog, so logging a snapshot's key shows only its guid). The store refuses
// a folder or file that is a symlink, not owned by root or open to group or
// others: fix the permissions, do not weaken the check.
package keylatch
