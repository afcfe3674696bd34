package msp

import (
	"fmt"
	"net/netip"
	"strings"
)

// Endpoint names one of the host services MSP protects.
type Endpoint uint8

// The protected host endpoints. EndpointNone is the zero value and stands for
// any destination MSP does not protect.
const (
	EndpointNone Endpoint = iota
	EndpointWireServer
	EndpointIMDS
	EndpointHostGA
)

// Well-known addresses of the host endpoints and of the guest proxy.
var (
	WireServerAddr = netip.MustParseAddrPort("168.63.129.16:80")
	HostGAAddr     = netip.MustParseAddrPort("168.63.129.16:32526")
	IMDSAddr       = netip.MustParseAddrPort("169.254.169.254:80")
	// ProxyAddr is where the guest agent listens and where redirected
	// connections land.
	ProxyAddr = netip.MustParseAddrPort("127.0.0.1:3080")
)

// Endpoints lists the protected endpoints in a fixed order.
var Endpoints = [...]Endpoint{EndpointWireServer, EndpointIMDS, EndpointHostGA}

// String returns the lowercase name used in authorizationRules and on the
// command line: "wireserver", "imds", "hostga".
func (e Endpoint) String() string {
	switch e {
	case EndpointWireServer:
		return "wireserver"
	case EndpointIMDS:
		return "imds"
	case EndpointHostGA:
		return "hostga"
	}
	return "none"
}

// DisplayName returns the name upstream uses in status strings and logs:
// "WireServer", "IMDS", "HostGA".
func (e Endpoint) DisplayName() string {
	switch e {
	case EndpointWireServer:
		return "WireServer"
	case EndpointIMDS:
		return "IMDS"
	case EndpointHostGA:
		return "HostGA"
	}
	return "None"
}

// AddrPort returns the endpoint's address, or the zero AddrPort for
// EndpointNone.
func (e Endpoint) AddrPort() netip.AddrPort {
	switch e {
	case EndpointWireServer:
		return WireServerAddr
	case EndpointIMDS:
		return IMDSAddr
	case EndpointHostGA:
		return HostGAAddr
	}
	return netip.AddrPort{}
}

// RequiresRoot reports whether only elevated callers may reach the endpoint
// (docs/protocol.md §4.4): WireServer and HostGAPlugin do, IMDS does not.
func (e Endpoint) RequiresRoot() bool {
	return e == EndpointWireServer || e == EndpointHostGA
}

// ParseEndpoint parses an endpoint name case-insensitively. It accepts the
// short names ("wireserver", "imds", "hostga") and the display names
// ("HostGAPlugin" too).
func ParseEndpoint(s string) (Endpoint, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "wireserver":
		return EndpointWireServer, nil
	case "imds":
		return EndpointIMDS, nil
	case "hostga", "hostgaplugin":
		return EndpointHostGA, nil
	}
	return EndpointNone, fmt.Errorf("%w: %q", ErrUnknownEndpoint, s)
}

// MarshalText implements encoding.TextMarshaler.
func (e Endpoint) MarshalText() ([]byte, error) {
	if e == EndpointNone {
		return nil, fmt.Errorf("%w: none", ErrUnknownEndpoint)
	}
	return []byte(e.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (e *Endpoint) UnmarshalText(b []byte) error {
	v, err := ParseEndpoint(string(b))
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// Classify maps a destination to the endpoint it addresses. IPv4-mapped IPv6
// addresses are unmapped first, so ::ffff:169.254.169.254 is IMDS.
func Classify(dst netip.AddrPort) Endpoint {
	a := dst.Addr().Unmap()
	switch {
	case a == WireServerAddr.Addr() && dst.Port() == WireServerAddr.Port():
		return EndpointWireServer
	case a == HostGAAddr.Addr() && dst.Port() == HostGAAddr.Port():
		return EndpointHostGA
	case a == IMDSAddr.Addr() && dst.Port() == IMDSAddr.Port():
		return EndpointIMDS
	}
	return EndpointNone
}
