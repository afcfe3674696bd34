//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/metadatasec/gpa/msp"
)

// PolicyMap is the redirect policy: which destinations are protected and
// where their connections go instead. It is the upstream policy_map (at most
// 10 entries). Changes apply to the next connect(); programs are not
// reloaded.
type PolicyMap struct {
	m     *ebpf.Map
	proxy netip.AddrPort // SetRedirect's target, from Options.Proxy

	mu sync.Mutex // one SetRedirect at a time
}

// PolicyEntry is one protected destination and the proxy it is sent to.
type PolicyEntry struct {
	// Dst is the protected destination, as applications dial it.
	Dst netip.AddrPort
	// Proxy is where its connections are sent instead.
	Proxy netip.AddrPort
}

// SetRedirect makes the policy exactly endpoints: each is redirected to the
// proxy given in Options.Proxy, and every other MSP endpoint is not. It is
// keylatch's RedirectPolicy, so the latch programs the kernel directly.
func (p *PolicyMap) SetRedirect(_ context.Context, endpoints []msp.Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, ep := range msp.Endpoints {
		if slices.Contains(endpoints, ep) {
			errs = append(errs, p.Set(ep.AddrPort(), p.proxy))
		} else if err := p.Delete(ep.AddrPort()); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	key, val := destinationEntry(d), destinationEntry(to)
	if err := p.m.Update(&key, &val, ebpf.UpdateAny); err != nil {
		return &MapError{Op: "update", Map: redirectMapPolicyMap, Key: d.String(), Err: err}
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
	key := destinationEntry(d)
	if err := p.m.Delete(&key); err != nil {
		return &MapError{Op: "delete", Map: redirectMapPolicyMap, Key: d.String(), Err: err}
	}
	return nil
}

// List returns the policy sorted by destination. Entries another writer
// stored in a form this package does not write (IPv6, other protocols) are
// reported as an error rather than skipped, so nothing is silently hidden.
func (p *PolicyMap) List() ([]PolicyEntry, error) {
	var (
		out        []PolicyEntry
		key, value redirectGpaDestinationEntry
		bad        []string
	)
	it := p.m.Iterate()
	for it.Next(&key, &value) {
		d, ok1 := key.addrPort()
		to, ok2 := value.addrPort()
		if !ok1 || !ok2 {
			bad = append(bad, fmt.Sprintf("%+v", key))
			continue
		}
		out = append(out, PolicyEntry{Dst: d, Proxy: to})
	}
	if err := it.Err(); err != nil {
		return nil, &MapError{Op: "iterate", Map: redirectMapPolicyMap, Err: err}
	}
	slices.SortFunc(out, func(a, b PolicyEntry) int { return a.Dst.Compare(b.Dst) })
	if len(bad) > 0 {
		return out, &MapError{Op: "iterate", Map: redirectMapPolicyMap,
			Err: fmt.Errorf("%w: %d entries not in IPv4/TCP form: %v", ErrInvalidAddress, len(bad), bad)}
	}
	return out, nil
}

// AuditMap answers "who made this connection?" for connections accepted by
// the proxy. Records are keyed by the client's address and port, written
// when the SYN is sent, and evicted least-recently-used if never consumed.
// It is the proxy's AuditLookup.
type AuditMap struct {
	caller *ebpf.Map    // gpa_caller_map: the full record
	reap   *auditReaper // removes consumed entries of audit_map, upstream's reduced copy
}

// LookupAndDelete returns the caller recorded for the redirected TCP
// connection from client (the accepted connection's remote address), and
// removes it atomically so a record is consumed once (upstream's audit_map
// copy goes within 100 ms, batched with others). The client address is
// part of the key, not only the port: a process that binds another
// loopback address to the same port and connects to the proxy directly
// finds nothing. A missing record gives an error matching ErrNotFound; the
// proxy must then refuse the connection. client must be IPv4 (or
// IPv4-mapped).
func (a *AuditMap) LookupAndDelete(client netip.AddrPort) (msp.ConnectRecord, error) {
	c, err := checkIPv4(client)
	if err != nil {
		return msp.ConnectRecord{}, err
	}
	key := callerKey(c)
	var val redirectGpaCallerRecord
	if err := a.caller.LookupAndDelete(&key, &val); err != nil {
		return msp.ConnectRecord{}, &MapError{Op: "lookup", Map: redirectMapGpaCallerMap, Key: c.String(), Err: err}
	}
	// Upstream's reduced copy exists only for other tools; drop it as
	// upstream's proxy does, in a batch shortly after (auditReaper). A
	// failure to delete it leaves an informational entry for LRU to
	// evict, so it must not cost the caller its record.
	a.reap.add(auditKey(c.Port()))
	return val.connectRecord(), nil
}
