package msptest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// Listeners are the sockets the host serves on. A nil field gets a fresh
// listener on 127.0.0.1 with a kernel-chosen port.
type Listeners struct {
	WireServer net.Listener
	HostGA     net.Listener
	IMDS       net.Listener
}

// ListenMetadata listens on the real endpoint addresses, 168.63.129.16:80,
// 168.63.129.16:32526 and 169.254.169.254:80. Call it only inside a network
// namespace of your own that has those addresses on its loopback (see the
// demo): anywhere else they are not local, and the listen fails. On error
// nothing stays open.
func ListenMetadata() (Listeners, error) {
	var ls Listeners
	for _, l := range []struct {
		addr netip.AddrPort
		dst  *net.Listener
	}{{msp.WireServerAddr, &ls.WireServer}, {msp.HostGAAddr, &ls.HostGA}, {msp.IMDSAddr, &ls.IMDS}} {
		ln, err := net.Listen("tcp", l.addr.String())
		if err != nil {
			ls.Close()
			return Listeners{}, fmt.Errorf("msptest: listen on %s: %w", l.addr, err)
		}
		*l.dst = ln
	}
	return ls, nil
}

// Close closes the listeners that are set.
func (ls Listeners) Close() {
	for _, l := range []net.Listener{ls.WireServer, ls.HostGA, ls.IMDS} {
		if l != nil {
			l.Close()
		}
	}
}

// Options configure NewHost. A nil *Options is the zero value.
type Options struct {
	// Listeners to serve on; nil fields get loopback listeners. The host
	// owns them once NewHost returns and closes them in Close.
	Listeners Listeners
	// StatusVersion is "2.0" (the default) or "1.0"; see SetStatusVersion.
	StatusVersion string
	// Rules are the initial authorizationRules items. Missing endpoints have
	// no item, which a v2.0 status reports as Disabled.
	Rules map[msp.Endpoint]*msp.AuthorizationItem
	// Enabled is secureChannelEnabled of a v2.0 status. NewHost sets it to
	// true when Rules has an item; SetEnabled changes it.
	Enabled bool
	// V1State is secureChannelState of a v1.0 status; "Disabled" if empty.
	V1State string
	// Now is the host clock, used for x-ms-azure-host-date and Date on
	// every response. Defaults to time.Now; set it to simulate a guest whose
	// clock drifts from the host's.
	Now func() time.Time
	// Logger receives one debug line per request; nil discards.
	Logger *slog.Logger
}

// Host is a running simulated metadata host. Its methods are safe for
// concurrent use.
type Host struct {
	log  *slog.Logger
	now  func() time.Time
	lns  map[msp.Endpoint]net.Listener
	wg   sync.WaitGroup
	done chan struct{} // closed when Close begins
	// verifier checks signatures against the keys the host issued,
	// keeping each key's HMAC state between requests.
	verifier *msp.Verifier

	mu          sync.Mutex
	closed      bool
	conns       map[net.Conn]struct{}
	version     string
	enabled     bool
	v1State     string
	rules       map[msp.Endpoint]*msp.AuthorizationItem
	incarnation uint32
	issued      []msp.Key // every key handed out, oldest first
	latched     *msp.Key  // the key the host considers attested
	faults      []*Fault
	requests    []Request
	handlers    map[msp.Endpoint]http.Handler
}

// NewHost starts a host. Like httptest.NewServer it panics if it cannot
// listen on loopback, since a test cannot go on without it.
func NewHost(opts *Options) *Host {
	if opts == nil {
		opts = &Options{}
	}
	h := &Host{
		log:         opts.Logger,
		now:         opts.Now,
		lns:         map[msp.Endpoint]net.Listener{},
		conns:       map[net.Conn]struct{}{},
		version:     "2.0",
		enabled:     opts.Enabled,
		v1State:     opts.V1State,
		rules:       map[msp.Endpoint]*msp.AuthorizationItem{},
		incarnation: 1,
		handlers:    map[msp.Endpoint]http.Handler{},
		done:        make(chan struct{}),
	}
	h.verifier = msp.NewVerifier(func(guid string) (msp.Key, bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.lookupLocked(guid)
	})
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if opts.StatusVersion != "" {
		h.version = opts.StatusVersion
	}
	if h.v1State == "" {
		h.v1State = "Disabled"
	}
	for ep, it := range opts.Rules {
		if it != nil {
			h.rules[ep] = cloneItem(it)
			h.enabled = true
		}
	}
	given := map[msp.Endpoint]net.Listener{
		msp.EndpointWireServer: opts.Listeners.WireServer,
		msp.EndpointHostGA:     opts.Listeners.HostGA,
		msp.EndpointIMDS:       opts.Listeners.IMDS,
	}
	for _, ep := range msp.Endpoints {
		ln := given[ep]
		if ln == nil {
			var err error
			ln, err = net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				for _, l := range h.lns {
					l.Close()
				}
				panic(fmt.Sprintf("msptest: listening on loopback for %s: %v", ep.DisplayName(), err))
			}
		}
		h.lns[ep] = ln
	}
	for ep, ln := range h.lns {
		h.wg.Add(1)
		go h.accept(ep, ln)
	}
	return h
}

// Close stops the listeners, closes every open connection and waits for the
// connection goroutines to end.
func (h *Host) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	for _, ln := range h.lns {
		ln.Close()
	}
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Addr returns the address the endpoint is served on.
func (h *Host) Addr(ep msp.Endpoint) netip.AddrPort {
	ln, ok := h.lns[ep]
	if !ok {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(ln.Addr().String())
	return ap
}

// WireServerAddr returns where WireServer is served.
func (h *Host) WireServerAddr() netip.AddrPort { return h.Addr(msp.EndpointWireServer) }

// HostGAAddr returns where the HostGAPlugin is served.
func (h *Host) HostGAAddr() netip.AddrPort { return h.Addr(msp.EndpointHostGA) }

// IMDSAddr returns where IMDS is served.
func (h *Host) IMDSAddr() netip.AddrPort { return h.Addr(msp.EndpointIMDS) }

// URL returns "http://ip:port" of the endpoint, without a trailing slash.
func (h *Host) URL(ep msp.Endpoint) string { return "http://" + h.Addr(ep).String() }

// WireServerURL returns URL(msp.EndpointWireServer).
func (h *Host) WireServerURL() string { return h.URL(msp.EndpointWireServer) }

// HostGAURL returns URL(msp.EndpointHostGA).
func (h *Host) HostGAURL() string { return h.URL(msp.EndpointHostGA) }

// IMDSURL returns URL(msp.EndpointIMDS).
func (h *Host) IMDSURL() string { return h.URL(msp.EndpointIMDS) }

// SetStatusVersion selects the form of the secure-channel status: "1.0"
// (secureChannelState) or "2.0" (secureChannelEnabled plus
// authorizationRules). Other values are sent as they are, for testing a
// client's validation.
func (h *Host) SetStatusVersion(v string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.version = v
}

// SetV1State sets secureChannelState for the v1.0 status, for example
// "Wireserver", "WireserverAndImds" or "Disabled".
func (h *Host) SetV1State(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.v1State = s
}

// SetEnabled sets secureChannelEnabled for the v2.0 status.
func (h *Host) SetEnabled(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.enabled = on
}

// SetModes changes the mode of the given endpoints in the v2.0
// authorizationRules and enables the secure channel. An endpoint without an
// item gets one with defaultAccess allow and the id "msptest-<endpoint>".
func (h *Host) SetModes(modes map[msp.Endpoint]msp.Mode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ep, m := range modes {
		it := h.rules[ep]
		if it == nil {
			it = &msp.AuthorizationItem{DefaultAccess: msp.AccessAllow, ID: "msptest-" + ep.String()}
		} else {
			it = cloneItem(it)
		}
		it.Mode = m
		h.rules[ep] = it
	}
	h.enabled = true
}

// SetRules replaces the authorizationRules item of ep; nil removes it. The
// item is copied.
func (h *Host) SetRules(ep msp.Endpoint, item *msp.AuthorizationItem) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if item == nil {
		delete(h.rules, ep)
		return
	}
	h.rules[ep] = cloneItem(item)
}

// SetHandler serves ordinary (non secure-channel) requests to ep with hd
// instead of the built-in responses. The host still checks the signature
// in Enforce, and IMDS's header rules, before calling hd. The request hd
// gets has RequestURI set to the raw URI and the header lines as sent. A nil
// hd restores the built-in responses.
func (h *Host) SetHandler(ep msp.Endpoint, hd http.Handler) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hd == nil {
		delete(h.handlers, ep)
		return
	}
	h.handlers[ep] = hd
}

// ResetKey does what raising keyIncarnationId in ARM does: the incarnation
// goes up, the latched key is forgotten, and signatures made with any
// earlier key stop verifying. The status reports keyGuid null until the
// agent acquires and attests a new key; then it reports the new key's guid.
// It returns the new incarnation.
func (h *Host) ResetKey() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.incarnation++
	h.latched = nil
	h.issued = nil
	return h.incarnation
}

// Incarnation returns the current keyIncarnationId.
func (h *Host) Incarnation() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.incarnation
}

// LatchedKey returns the key the host has latched (attested), if any. It
// holds the secret: tests only, never log it.
func (h *Host) LatchedKey() (msp.Key, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.latched == nil {
		return msp.Key{}, false
	}
	return *h.latched, true
}

// IssuedKeys returns every key issued since the start or the last
// ResetKey, oldest first, attested or not. They hold secrets: tests only.
func (h *Host) IssuedKeys() []msp.Key {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.issued)
}

// LatchKey makes k the host's latched key, as if an agent had acquired and
// attested it, so a test can start with a host and a key store that agree.
func (h *Host) LatchKey(k msp.Key) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.issued = append(h.issued, k)
	h.latched = &k
}

// modeLocked returns the mode the host enforces on ordinary requests to ep.
// For a v1.0 status it follows docs/protocol.md §2.5's derivation, where HostGA
// follows WireServer; for v2.0 HostGA uses its own item if there is one,
// else WireServer's.
func (h *Host) modeLocked(ep msp.Endpoint) msp.Mode {
	if h.version == "1.0" {
		s := strings.ToLower(h.v1State)
		if ep == msp.EndpointIMDS {
			switch s {
			case "disabled", "":
				return msp.ModeDisabled
			case "wireserverandimds":
				return msp.ModeEnforce
			}
			return msp.ModeAudit
		}
		switch s {
		case "wireserver", "wireserverandimds":
			return msp.ModeEnforce
		case "audit":
			return msp.ModeAudit
		}
		return msp.ModeDisabled
	}
	if !h.enabled {
		return msp.ModeDisabled
	}
	if it := h.rules[ep]; it != nil {
		return it.Mode
	}
	// The agent runs HostGA under the WireServer mode (§2.5); without its
	// own item the host does the same.
	if it := h.rules[msp.EndpointWireServer]; ep == msp.EndpointHostGA && it != nil {
		return it.Mode
	}
	return msp.ModeDisabled
}

// lookupLocked finds a key the host accepts signatures from.
func (h *Host) lookupLocked(guid string) (msp.Key, bool) {
	for _, k := range h.issued {
		if k.GUID == guid {
			return k, true
		}
	}
	return msp.Key{}, false
}

func (h *Host) issueKeyLocked() (msp.Key, error) {
	var secret [32]byte
	var g [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return msp.Key{}, err
	}
	if _, err := rand.Read(g[:]); err != nil {
		return msp.Key{}, err
	}
	g[6] = g[6]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	x := hex.EncodeToString(g[:])
	guid := x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
	k, err := msp.NewKey(guid, hex.EncodeToString(secret[:]))
	if err != nil {
		return msp.Key{}, err
	}
	inc := h.incarnation
	k.Incarnation = &inc
	k.Issued = h.now().UTC().Format(time.RFC3339)
	h.issued = append(h.issued, k)
	return k, nil
}

func (h *Host) accept(ep msp.Endpoint, ln net.Listener) {
	defer h.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			return
		}
		h.conns[c] = struct{}{}
		down := h.takeFaultLocked(ep, "", true) != nil
		h.mu.Unlock()
		if down {
			h.record(Request{Endpoint: ep, Time: h.now(), Dropped: true})
			h.forget(c)
			continue
		}
		h.wg.Add(1)
		go h.serveConn(ep, c)
	}
}

func (h *Host) forget(c net.Conn) {
	c.Close()
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// idleTimeout bounds how long a connection may sit between requests, so a
// test that leaks a client connection does not keep a goroutine forever.
const idleTimeout = 30 * time.Second

func (h *Host) serveConn(ep msp.Endpoint, c net.Conn) {
	defer h.wg.Done()
	defer h.forget(c)
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
		req, err := readRequest(br, bw)
		if err != nil {
			var re *httpwire.RequestError
			status := http.StatusBadRequest
			switch {
			case err == io.EOF:
				return
			case errors.As(err, &re):
				status = re.Status
			case errors.Is(err, httpwire.ErrBodyTooLarge):
				status = http.StatusRequestEntityTooLarge
			}
			r := newResponse(status, "text/plain; charset=utf-8", []byte(err.Error()+"\n"))
			r.close = true
			_ = writeResponse(bw, r)
			return
		}
		resp, drop := h.handle(ep, req, c.RemoteAddr())
		if drop {
			return
		}
		resp.close = resp.close || req.Close
		if err := writeResponse(bw, resp); err != nil || resp.close {
			return
		}
	}
}

// handle serves one request and records it. drop reports that the
// connection must be closed without a response.
func (h *Host) handle(ep msp.Endpoint, req *wireRequest, remote net.Addr) (resp *response, drop bool) {
	rec := Request{
		Endpoint: ep,
		Method:   req.Method,
		RawURI:   req.URI,
		Header:   slices.Clone(req.Header),
		Body:     slices.Clone(req.body),
		Time:     h.now(),
		// Set before faults apply, so a key-protocol request a fault
		// answered is still told apart from proxied traffic.
		SecureChannel: isSecureChannel(ep, req),
	}
	msg := &msp.Message{Method: req.Method, RawURI: req.URI, Header: req.Header, Body: req.body}
	_, rec.Signed = msg.Get(msp.HeaderAuthorization)

	// The HMAC is computed outside the host's lock, which every connection
	// takes: holding it while verifying serialized the connections.
	var k msp.Key
	var verr error
	if rec.Signed {
		k, verr = h.verifier.Verify(msg)
	}
	h.mu.Lock()
	if rec.Signed {
		rec.SignatureValid = verr == nil
		if verr != nil {
			rec.SignatureError = verr.Error()
		} else {
			rec.KeyGUID = k.GUID
			// Outside the key protocol only the latched key counts: an
			// issued but unattested key is not yet trusted by the host.
			if !rec.SecureChannel && (h.latched == nil || h.latched.GUID != k.GUID) {
				rec.SignatureValid = false
				rec.SignatureError = "msptest: key " + k.GUID + " is not the latched key"
			}
		}
	}
	fault := h.takeFaultLocked(ep, req.path(), false)
	h.mu.Unlock()

	defer func() {
		if resp != nil {
			now := h.now()
			resp.header.Set(msp.HeaderDate, msp.FormatDate(now))
			resp.header.Set("Date", now.UTC().Format(http.TimeFormat))
			rec.Status = resp.status
		}
		rec.Dropped = drop
		h.record(rec)
		h.log.Debug("msptest request", "endpoint", ep.String(), "method", req.Method, "uri", req.URI,
			"signed", rec.Signed, "signatureValid", rec.SignatureValid, "status", rec.Status)
	}()

	if fault != nil {
		rec.Fault = fault.Kind
		switch fault.Kind {
		case FaultSlow:
			select {
			case <-time.After(fault.Delay):
			case <-h.done:
				return nil, true
			}
		case FaultDrop:
			return nil, true
		case FaultStatus:
			st := fault.Status
			if st == 0 {
				st = http.StatusInternalServerError
			}
			return newResponse(st, "text/plain; charset=utf-8", []byte(http.StatusText(st)+"\n")), false
		case FaultMalformedJSON:
			return newResponse(http.StatusOK, "application/json; charset=utf-8", []byte(`{"version": "2.0", "keyGuid": `)), false
		case FaultXMLBody:
			return newResponse(http.StatusOK, "application/xml; charset=utf-8",
				[]byte(`<?xml version="1.0" encoding="utf-8"?><Error><Code>InternalError</Code><Message>msptest injected XML body</Message></Error>`)), false
		}
	}

	resp = h.route(ep, req, &rec, remote)
	if fault != nil && fault.Kind == FaultWrongContentType {
		resp.header.Set("Content-Type", "text/xml; charset=utf-8")
	}
	return resp, false
}

func (h *Host) route(ep msp.Endpoint, req *wireRequest, rec *Request, remote net.Addr) *response {
	if rec.SecureChannel {
		return h.secureChannel(req, rec)
	}
	h.mu.Lock()
	mode := h.modeLocked(ep)
	hd := h.handlers[ep]
	h.mu.Unlock()
	if ep == msp.EndpointIMDS {
		if v, ok := req.Get("Metadata"); !ok || !strings.EqualFold(strings.TrimSpace(v), "true") {
			return jsonResponse(http.StatusBadRequest, `{"error":"Bad request. Required metadata header not specified"}`)
		}
		if _, ok := req.Get("X-Forwarded-For"); ok {
			return jsonResponse(http.StatusBadRequest, `{"error":"Bad request. X-Forwarded-For header is not allowed"}`)
		}
	}
	if mode == msp.ModeEnforce && !rec.SignatureValid && !msp.SkipSigURI(req.Method, req.URI) {
		return newResponse(http.StatusUnauthorized, "text/plain; charset=utf-8",
			[]byte("msptest: "+ep.DisplayName()+" is in Enforce and the request has no valid signature\n"))
	}
	if hd != nil {
		return serveHandler(hd, req, remote, h.Addr(ep))
	}
	return builtin(ep, req)
}

func jsonResponse(status int, body string) *response {
	return newResponse(status, "application/json; charset=utf-8", []byte(body))
}

func serveHandler(hd http.Handler, req *wireRequest, remote net.Addr, local netip.AddrPort) *response {
	status, header, body, err := httpwire.ServeHandler(context.Background(), hd, req.Request,
		&httpwire.ServeOptions{Body: req.body, RemoteAddr: remote.String(), DefaultHost: local.String()})
	if err != nil {
		return newResponse(http.StatusBadRequest, "text/plain; charset=utf-8", []byte(err.Error()+"\n"))
	}
	return &response{status: status, header: header, body: body}
}

func cloneItem(it *msp.AuthorizationItem) *msp.AuthorizationItem {
	c := *it
	if it.Rules != nil {
		r := *it.Rules
		c.Rules = &r
	}
	return &c
}

func isSecureChannel(ep msp.Endpoint, req *wireRequest) bool {
	return ep == msp.EndpointWireServer && strings.HasPrefix(req.path(), "/secure-channel/")
}
