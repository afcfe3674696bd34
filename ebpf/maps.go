//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

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

// SkipMap lists processes (by thread group id) whose connections are never
// redirected: the agent's own process, so its upstream connections reach
// the host. It is the upstream skip_process_map (at most 10 entries).
type SkipMap struct{ m *ebpf.Map }

// Add exempts the process tgid from redirection.
func (s *SkipMap) Add(tgid uint32) error {
	k := marshalSkip(tgid)
	if err := s.m.Update(k, k, ebpf.UpdateAny); err != nil {
		return &MapError{Op: "update", Map: "skip_process_map", Key: strconv.FormatUint(uint64(tgid), 10), Err: err}
	}
	return nil
}

// Delete removes tgid from the skip list; a tgid not in it gives an error
// matching ErrNotFound.
func (s *SkipMap) Delete(tgid uint32) error {
	if err := s.m.Delete(marshalSkip(tgid)); err != nil {
		return &MapError{Op: "delete", Map: "skip_process_map", Key: strconv.FormatUint(uint64(tgid), 10), Err: err}
	}
	return nil
}

// List returns the skipped tgids in ascending order.
func (s *SkipMap) List() ([]uint32, error) {
	var (
		out      []uint32
		key, val = make([]byte, skipEntrySize), make([]byte, skipEntrySize)
	)
	it := s.m.Iterate()
	for it.Next(&key, &val) {
		out = append(out, ne.Uint32(key))
	}
	if err := it.Err(); err != nil {
		return nil, &MapError{Op: "iterate", Map: "skip_process_map", Err: err}
	}
	slices.SortFunc(out, cmp.Compare)
	return out, nil
}

// AuditMap answers "who made this connection?" for connections accepted by
// the proxy. Records are keyed by the client's local port, written when the
// SYN is sent, and evicted least-recently-used if never consumed.
type AuditMap struct {
	caller   *ebpf.Map // gpa_caller_map: the full record
	upstream *ebpf.Map // audit_map: upstream's reduced copy, for its tools
}

// LookupAndDelete returns the caller recorded for the redirected TCP
// connection whose client port is localPort (the remote port of the
// accepted connection), and removes it atomically so a record is consumed
// once. A missing record gives an error matching ErrNotFound; the proxy
// must then refuse the connection.
func (a *AuditMap) LookupAndDelete(localPort uint16) (AuditRecord, error) {
	key := marshalAuditKey(localPort)
	val := make([]byte, callerRecordSize)
	port := strconv.FormatUint(uint64(localPort), 10)
	// Drop upstream's reduced copy first (it exists only for other tools,
	// and LRU may already have evicted it), so that a failure here leaves
	// the full record in place for a retry.
	if err := a.upstream.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return AuditRecord{}, &MapError{Op: "delete", Map: "audit_map", Key: port, Err: err}
	}
	if err := a.caller.LookupAndDelete(key, &val); err != nil {
		return AuditRecord{}, &MapError{Op: "lookup", Map: "gpa_caller_map", Key: port, Err: err}
	}
	rec, err := unmarshalCallerRecord(val)
	if err != nil {
		return AuditRecord{}, &MapError{Op: "lookup", Map: "gpa_caller_map", Key: port, Err: err}
	}
	return rec, nil
}
