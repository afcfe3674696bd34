package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/metadatasec/gpa/msp"
)

// ErrNoCaller means the proxy could not tell which process opened a
// connection, typically because the connection was made to the listener
// directly rather than redirected by the kernel. Requests on such a
// connection are answered 421 with Connection: close.
var ErrNoCaller = errors.New("proxy: caller of connection not found")

// Caller is who opened a client connection and where it meant to go.
type Caller struct {
	// Claims describe the calling process; ClientIP and ClientPort are those
	// of the accepted socket.
	Claims msp.Claims
	// OriginalDst is the address the caller connected to before the kernel
	// redirected the connection to the proxy, for example 169.254.169.254:80.
	OriginalDst netip.AddrPort
}

// CallerResolver identifies the process behind an accepted connection. The
// proxy calls Resolve once per connection, before it reads the first
// request. An error (wrapping ErrNoCaller when the connection is simply
// unknown) makes every request on the connection fail with 421.
// Implementations must be safe for concurrent use.
type CallerResolver interface {
	Resolve(ctx context.Context, conn net.Conn) (*Caller, error)
}

// StaticResolver resolves every connection to the same caller. It is meant
// for tests and for tools that proxy on behalf of one known process. The
// client address of the returned claims is filled from the connection.
type StaticResolver struct {
	// Caller is returned for every connection; nil resolves nothing, so every
	// request gets 421.
	Caller *Caller
	// ByClientPort, when set, takes precedence over Caller and returns the
	// caller for a client source port (nil for none). It lets one test give
	// different connections different identities.
	ByClientPort func(port uint16) *Caller
}

// Resolve implements CallerResolver.
func (s *StaticResolver) Resolve(_ context.Context, conn net.Conn) (*Caller, error) {
	ap := remoteAddrPort(conn)
	c := s.Caller
	if s.ByClientPort != nil {
		c = s.ByClientPort(ap.Port())
	}
	if c == nil {
		return nil, fmt.Errorf("%w: client port %d", ErrNoCaller, ap.Port())
	}
	out := *c
	out.Claims.UserGroups = append([]string(nil), c.Claims.UserGroups...)
	out.Claims.ClientIP = ap.Addr().Unmap().String()
	out.Claims.ClientPort = ap.Port()
	return &out, nil
}

func remoteAddrPort(conn net.Conn) netip.AddrPort {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return ap
}
