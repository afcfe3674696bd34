package keylatch

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/metadatasec/gpa/internal/httpwire"
	"github.com/metadatasec/gpa/msp"
)

// ClientOptions configure NewClient. The zero value talks to the real
// WireServer at 168.63.129.16:80.
type ClientOptions struct {
	// Addr is where WireServer is dialled; msp.WireServerAddr if zero. Tests
	// point it at msptest.Host.WireServerAddr().
	Addr netip.AddrPort
	// Host is the Host header; "168.63.129.16" if empty, as upstream sends
	// it even when a test dials elsewhere.
	Host string
	// Timeout bounds each request, connect to last body byte; 10 s if zero.
	Timeout time.Duration
	// Dial opens the connection; a net.Dialer if nil. The agent leaves it
	// nil: it puts its own process in the eBPF skip list
	// (ebpf.Redirector.Skip), so its connections to WireServer are not
	// redirected to the proxy.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the guest clock; time.Now if nil.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Client speaks the secure-channel protocol of docs/protocol.md §2.1–§2.2 with
// WireServer. Each request uses a fresh connection and carries exactly the
// header lines upstream sends, in upstream's order and case, because the
// host verifies the attestation signature over them. It also keeps the
// guest's view of the host clock (§2.6). Safe for concurrent use.
type Client struct {
	addr    netip.AddrPort
	host    string
	timeout time.Duration
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	now     func() time.Time
	log     *slog.Logger

	mu       sync.Mutex
	offset   time.Duration // host clock minus guest clock
	syncedAt time.Time     // guest time of the last sync; zero before the first
}

// NewClient returns a client. A nil opts is the zero value.
func NewClient(opts *ClientOptions) *Client {
	if opts == nil {
		opts = &ClientOptions{}
	}
	c := &Client{addr: opts.Addr, host: opts.Host, timeout: opts.Timeout, dial: opts.Dial, now: opts.Now, log: opts.Logger}
	if !c.addr.IsValid() {
		c.addr = msp.WireServerAddr
	}
	if c.host == "" {
		c.host = msp.WireServerAddr.Addr().String()
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	if c.dial == nil {
		c.dial = (&net.Dialer{}).DialContext
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// HostError reports an unexpected answer from the host. It matches
// ErrHostResponse.
type HostError struct {
	// Op is "status", "acquire", "attest" or "telemetry".
	Op string
	// StatusCode is the HTTP status, 0 for a body problem.
	StatusCode int
	// Detail says what was wrong when StatusCode is not the problem.
	Detail string
}

// Error describes the unexpected answer.
func (e *HostError) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("keylatch: %s: host answered %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("keylatch: %s: %s", e.Op, e.Detail)
}

// Is makes errors.Is(err, ErrHostResponse) true.
func (e *HostError) Is(target error) bool { return target == ErrHostResponse }

// maxResponse bounds a secure-channel response body; real ones are a few
// KiB even with rules.
const maxResponse = 1 << 20

// Paths and fixed values of the key protocol.
const (
	StatusPath      = "/secure-channel/status"
	KeyPath         = "/secure-channel/key"
	acquireBody     = `{"authorizationScheme": "Azure-HMAC-SHA256"}`
	metadataValue   = "True " // the trailing space is what upstream sends
	attestSuffix    = "/key-attestation"
	contentTypeJSON = "application/json"
)

// GetStatus fetches and validates the secure-channel status. It syncs the
// host clock from the response when no sync happened in the last 15
// minutes. Any 2xx is success, as upstream.
func (c *Client) GetStatus(ctx context.Context) (*KeyStatus, error) {
	resp, err := c.do(ctx, "GET", StatusPath, []msp.HeaderField{{Name: "Metadata", Value: metadataValue}}, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("keylatch: status: %w", err)
	}
	c.maybeSync(resp.header)
	if resp.status < 200 || resp.status > 299 {
		return nil, &HostError{Op: "status", StatusCode: resp.status}
	}
	body, isXML, err := decodeBody(resp)
	if err != nil {
		return nil, &HostError{Op: "status", Detail: err.Error()}
	}
	if isXML {
		return ParseKeyStatusXML(body)
	}
	return ParseKeyStatus(body)
}

// AcquireKey asks the host for a new key. Only 200 is success. The key
// holds its secret; errors never do.
func (c *Client) AcquireKey(ctx context.Context) (msp.Key, error) {
	hdr := []msp.HeaderField{{Name: "Metadata", Value: metadataValue}, {Name: "Content-Type", Value: contentTypeJSON}}
	resp, err := c.do(ctx, "POST", KeyPath, hdr, []byte(acquireBody), nil)
	if err != nil {
		return msp.Key{}, fmt.Errorf("keylatch: acquire: %w", err)
	}
	if resp.status != http.StatusOK {
		return msp.Key{}, &HostError{Op: "acquire", StatusCode: resp.status}
	}
	body, isXML, err := decodeBody(resp)
	if err != nil {
		return msp.Key{}, &HostError{Op: "acquire", Detail: err.Error()}
	}
	if isXML {
		return msp.Key{}, &HostError{Op: "acquire", Detail: "key response is XML, want JSON"}
	}
	k, err := msp.ParseKeyJSON(body)
	if err != nil {
		return msp.Key{}, fmt.Errorf("keylatch: acquire: %w", err)
	}
	return k, nil
}

// AttestKey proves possession of k: POST .../key/<guid>/key-attestation,
// signed with k. Only 200 is success.
func (c *Client) AttestKey(ctx context.Context, k msp.Key) error {
	signer, err := msp.NewSigner(k)
	if err != nil {
		return fmt.Errorf("keylatch: attest: %w", err)
	}
	resp, err := c.do(ctx, "POST", KeyPath+"/"+k.GUID+attestSuffix, []msp.HeaderField{{Name: "Metadata", Value: metadataValue}}, nil, signer)
	if err != nil {
		return fmt.Errorf("keylatch: attest: %w", err)
	}
	if resp.status != http.StatusOK {
		return &HostError{Op: "attest", StatusCode: resp.status}
	}
	return nil
}

// TelemetryPath is where telemetry events go, upstream's URI.
const TelemetryPath = "/machine/?comp=telemetrydata"

// SendTelemetry posts one TelemetryData XML document to WireServer with
// upstream's headers (x-ms-version 2012-11-30, text/xml). Upstream sends it
// unsigned (the URI is one of the skip-sig requests); we sign it with
// signer when the latch has a key, as the proxy signs a root caller's
// request, so a host that checks every signature accepts it too. A nil
// signer sends it unsigned. Any 2xx is success.
func (c *Client) SendTelemetry(ctx context.Context, xml []byte, signer *msp.Signer) error {
	hdr := []msp.HeaderField{{Name: "x-ms-version", Value: "2012-11-30"}, {Name: "Content-Type", Value: "text/xml; charset=utf-8"}}
	resp, err := c.do(ctx, "POST", TelemetryPath, hdr, xml, signer)
	if err != nil {
		return fmt.Errorf("keylatch: telemetry: %w", err)
	}
	if resp.status < 200 || resp.status > 299 {
		return &HostError{Op: "telemetry", StatusCode: resp.status}
	}
	return nil
}

// Now returns the guest clock shifted to the host clock, as upstream dates
// its requests once a sync has happened.
func (c *Client) Now() time.Time {
	c.mu.Lock()
	off := c.offset
	c.mu.Unlock()
	return c.now().Add(off).UTC()
}

// ClockOffset returns how far the host clock is ahead of the guest clock,
// and whether any sync has happened.
func (c *Client) ClockOffset() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset, !c.syncedAt.IsZero()
}

// clockMaxAge is how long one host-time sync is trusted (§2.6).
const clockMaxAge = 15 * time.Minute

func (c *Client) maybeSync(h http.Header) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.syncedAt.IsZero() && now.Sub(c.syncedAt) < clockMaxAge {
		return
	}
	// The custom header wins; if it is present but unparseable there is no
	// fallback to Date, as upstream.
	v := h.Values(msp.HeaderDate)
	if len(v) == 0 {
		v = h.Values("Date")
	}
	if len(v) == 0 {
		return
	}
	t, err := msp.ParseDate(v[0])
	if err != nil {
		c.log.Warn("cannot parse host date", "value", v[0], "error", err)
		return
	}
	c.offset = t.Sub(now)
	c.syncedAt = now
}

type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request over a fresh connection with the default header
// lines of §2.1 in upstream's order, then extra, then the signature if
// signer is set.
func (c *Client) do(ctx context.Context, method, path string, extra []msp.HeaderField, body []byte, signer *msp.Signer) (*rawResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	msg := &msp.Message{Method: method, RawURI: path, Body: body}
	msg.Header = append(msg.Header,
		msp.HeaderField{Name: msp.HeaderDate, Value: msp.FormatDate(c.Now())},
		msp.HeaderField{Name: "host", Value: c.host},
		msp.HeaderField{Name: msp.HeaderClaims, Value: msp.ClaimsHeaderRoot},
		msp.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))},
	)
	for _, h := range extra {
		msg.Header = append(msg.Header, msp.HeaderField{Name: strings.ToLower(h.Name), Value: h.Value})
	}
	if signer != nil {
		sig, err := signer.Sign(msg)
		if err != nil {
			return nil, err
		}
		msg.Header = append(msg.Header, msp.HeaderField{Name: msp.HeaderAuthorization, Value: sig})
	}

	conn, err := c.dial(ctx, "tcp", c.addr.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Close the connection when ctx ends so a cancelled latcher does not
	// wait for a slow host.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// No "connection: close": every header line on the wire must be one the
	// signature covered. The connection is closed after one response.
	bw := bufio.NewWriterSize(conn, 1024+len(body))
	httpwire.WriteRequestHead(bw, method, path, msg.Header)
	bw.Write(body)
	if err := bw.Flush(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	resp, err := httpwire.ReadResponse(bufio.NewReader(conn), method)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if len(data) > maxResponse {
		return nil, fmt.Errorf("response body over %d bytes", maxResponse)
	}
	// maybeSync and decodeBody look fields up by name, first one first.
	header := make(http.Header, len(resp.Header))
	for _, f := range resp.Header {
		header.Add(f.Name, f.Value)
	}
	return &rawResponse{status: resp.Code, header: header, body: data}, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// decodeBody applies upstream's read_response_body rules: XML when the
// Content-Type mentions xml, UTF-16LE decoded, UTF-32 refused.
func decodeBody(r *rawResponse) (body []byte, isXML bool, err error) {
	ct := strings.ToLower(r.header.Get("Content-Type"))
	isXML = strings.Contains(ct, "xml")
	switch {
	case strings.Contains(ct, "utf-32"):
		return nil, isXML, fmt.Errorf("unsupported charset in %q", ct)
	case strings.Contains(ct, "utf-16"):
		if len(r.body)%2 != 0 {
			return nil, isXML, fmt.Errorf("odd-length UTF-16 body")
		}
		u := make([]uint16, len(r.body)/2)
		for i := range u {
			u[i] = uint16(r.body[2*i]) | uint16(r.body[2*i+1])<<8
		}
		if len(u) > 0 && u[0] == 0xFEFF {
			u = u[1:]
		}
		return []byte(string(utf16.Decode(u))), isXML, nil
	}
	return r.body, isXML, nil
}
