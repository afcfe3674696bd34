//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// PolicyMap is the redirect policy: which destinations are protected and
// where their connections go instead. It is the upstream policy_map (at most
// 10 entries). Changes apply to the next connect(); programs are not
// reloaded.
type PolicyMap struct{ m *ebpf.Map }

// PolicyEntry is one protected destination and the proxy it is sent to.
type PolicyEntry struct {
	// Dst is the protected destination, as applications dial it.
	Dst netip.AddrPort
	// Proxy is where its connections are sent instead.
	Proxy netip.AddrPort
}

// Set protects TCP connections to dst and redirects them to proxy. Both
// must be IPv4 (IPv4-mapped IPv6 is unmapped) with a non-zero port; an
// AF_INET6 socket dialling the mapped form of dst is redirected too.
func (p *PolicyMap) Set(dst, proxy netip.AddrPort) error {
	d, err := checkIPv4(dst)
	if err != nil {
		return err
	}
	to, err := checkIPv4(proxy)
	if err != nil {
		return err
	}
	if err := p.m.Update(marshalDestination(d), marshalDestination(to), ebpf.UpdateAny); err != nil {
		return &MapError{Op: "update", Map: "policy_map", Key: d.String(), Err: err}
	}
	return nil
}

// Delete stops redirecting dst. Deleting a destination that is not in the
// map returns an error matching ErrNotFound.
func (p *PolicyMap) Delete(dst netip.AddrPort) error {
	d, err := checkIPv4(dst)
	if err != nil {
		return err
	}
	if err := p.m.Delete(marshalDestination(d)); err != nil {
		return &MapError{Op: "delete", Map: "policy_map", Key: d.String(), Err: err}
	}
	return nil
}

// List returns the policy sorted by destination. Entries another writer
// stored in a form this package does not write (IPv6, other protocols) are
// reported as an error rather than skipped, so nothing is silently hidden.
func (p *PolicyMap) List() ([]PolicyEntry, error) {
	var (
		out        []PolicyEntry
		key, value = make([]byte, destinationEntrySize), make([]byte, destinationEntrySize)
		bad        []string
	)
	it := p.m.Iterate()
	for it.Next(&key, &value) {
		d, ok1 := unmarshalDestination(key)
		to, ok2 := unmarshalDestination(value)
		if !ok1 || !ok2 {
			bad = append(bad, fmt.Sprintf("% x", key))
			continue
		}
		out = append(out, PolicyEntry{Dst: d, Proxy: to})
	}
	if err := it.Err(); err != nil {
		return nil, &MapError{Op: "iterate", Map: "policy_map", Err: err}
	}
	slices.SortFunc(out, func(a, b PolicyEntry) int { return a.Dst.Compare(b.Dst) })
	if len(bad) > 0 {
		return out, &MapError{Op: "iterate", Map: "policy_map",
			Err: fmt.Errorf("%w: %d entries not in IPv4/TCP form: %v", ErrInvalidAddress, len(bad), bad)}
	}
	return out, nil
}

// AuditMap answers "who made this connection?" for connections accepted by
// the proxy. Records are keyed by the client's address and port, written
// when the SYN is sent, and evicted least-recently-used if never consumed.
type AuditMap struct {
	caller   *ebpf.Map // gpa_caller_map: the full record
	upstream *ebpf.Map // audit_map: upstream's reduced copy, for its tools
}

// LookupAndDelete returns the caller recorded for the redirected TCP
// connection from client (the accepted connection's remote address), and
// removes it atomically so a record is consumed once. The client address is
// part of the key, not only the port: a process that binds another loopback
// address to the same port and connects to the proxy directly finds
// nothing. A missing record gives an error matching ErrNotFound; the proxy
// must then refuse the connection. client must be IPv4 (or IPv4-mapped).
func (a *AuditMap) LookupAndDelete(client netip.AddrPort) (AuditRecord, error) {
	c, err := checkIPv4(client)
	if err != nil {
		return AuditRecord{}, err
	}
	key := marshalCallerKey(c)
	val := make([]byte, callerRecordSize)
	if err := a.caller.LookupAndDelete(key, &val); err != nil {
		return AuditRecord{}, &MapError{Op: "lookup", Map: "gpa_caller_map", Key: c.String(), Err: err}
	}
	rec, err := ParseCallerRecord(val)
	if err != nil {
		return AuditRecord{}, &MapError{Op: "lookup", Map: "gpa_caller_map", Key: c.String(), Err: err}
	}
	// Upstream's reduced copy exists only for other tools; drop it as
	// upstream's proxy does. It may already be gone (LRU), and a failure
	// to delete it leaves an informational entry for LRU to evict, so it
	// must not cost the caller its record.
	_ = a.upstream.Delete(marshalAuditKey(c.Port()))
	return rec, nil
}
