package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

// allowHeader lists msp.AllowedMethods in the order upstream's Allow header
// does.
const allowHeader = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"

// traversal reports the requests upstream refuses before anything else: a
// raw path with "//", or one that has ".." after a single percent-decode.
func traversal(uri string) bool {
	path, _, _ := strings.Cut(uri, "?")
	if strings.Contains(path, "//") {
		return true
	}
	return strings.Contains(msp.PercentDecodeLossy(path), "..")
}

// handle runs the pipeline of docs/protocol.md §4.3 for one request and reports
// whether the connection stays open.
func (cc *clientConn) handle(ctx context.Context, r *request) (keep bool) {
	s := cc.srv
	start := time.Now()
	s.requests.Add(1)
	rec := cc.newRecord(r, start)
	status := 0
	defer func() { cc.finish(rec, status) }()

	// 1. Method allow-list.
	if !msp.MethodAllowed(r.method) {
		status = http.StatusMethodNotAllowed
		cc.writeSimple(status, []msp.HeaderField{{Name: "Allow", Value: allowHeader},
			{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, []byte("Method Not Allowed"), true)
		return false
	}
	// 2. Traversal guard.
	if traversal(r.uri) {
		status = http.StatusForbidden
		rec.ErrorDetails = "path traversal"
		cc.writeSimple(status, nil, nil, true)
		return false
	}
	// 3, 4. The agent's own endpoints, before the destination is looked at.
	if r.host == "" || cc.caller == nil || r.host == hostOf(cc.caller.OriginalDst) {
		switch r.uri {
		case msp.ProvisionPath:
			status, keep = cc.serveProvision(ctx, r)
			return keep
		case msp.AggregateStatusPath:
			status, keep = cc.serveAggregateStatus(ctx, r)
			return keep
		}
	}
	// 5. Unknown caller or destination: the connection did not come through
	// the redirect.
	if cc.caller == nil {
		status = http.StatusMisdirectedRequest
		rec.ErrorDetails = "caller not resolved"
		cc.writeSimple(status, nil, nil, true)
		return false
	}
	dst := cc.caller.OriginalDst
	ep := msp.Classify(dst)
	// Not an open proxy: an absolute-form target must name the destination
	// the caller connected to, and only host endpoints are served.
	if r.host != "" && r.host != hostOf(dst) && r.host != dst.String() {
		status = http.StatusForbidden
		rec.ErrorDetails = "absolute-form target names another host"
		cc.writeSimple(status, nil, nil, true)
		return false
	}
	if ep == msp.EndpointNone {
		status = http.StatusForbidden
		rec.ErrorDetails = "destination is not a host endpoint"
		cc.writeSimple(status, nil, nil, true)
		return false
	}

	// 6. Authorization under one snapshot, which also dates and signs.
	snap := s.cfg.Latch.Current()
	if snap == nil || snap.State == msp.SecureChannelUnknown {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.StartupWait)
		if known := s.cfg.Latch.WaitKnown(wctx); known != nil {
			snap = known
		}
		cancel()
	}
	if snap == nil {
		snap = &keylatch.Snapshot{State: msp.SecureChannelUnknown}
	}
	s.cfg.Metrics.Epoch(snap.Epoch)
	d := cc.decide(snap, ep, r, rec)
	switch d.Verdict {
	case msp.VerdictDeny:
		status = http.StatusForbidden
		rec.ErrorDetails = "Block unauthorized request"
		cc.writeDeny(ep, d)
		return false
	case msp.VerdictAllowAudited:
		cc.logger().Info("proxy: request denied in audit mode, forwarding it", "endpoint", ep.String(),
			"ruleSetId", d.RuleSetID, "uri", r.uri, "user", cc.caller.Claims.UserName)
	}

	skipSig := d.Reason == msp.ReasonSkipSig
	status, keep = cc.forward(ctx, r, rec, snap, dst, ep, skipSig)
	return keep
}

// decide evaluates r under snap's rules and puts the decision, and the
// snapshot's epoch, in rec.
func (cc *clientConn) decide(snap *keylatch.Snapshot, ep msp.Endpoint, r *request, rec *msp.AuditRecord) msp.Decision {
	d := snap.Policy.Evaluate(ep, &msp.Request{Method: r.method, RawURI: r.uri, Claims: &cc.caller.Claims})
	rec.Epoch = snap.Epoch
	rec.Decision, rec.Rule, rec.Reason = d.Verdict.String(), d.RuleSetID, d.Reason.String()
	rec.Privilege, rec.Identity, rec.Mode = d.Privilege, d.Identity, d.Mode.String()
	return d
}

// sign appends the signature under signer of the request that hdr and
// body put on the wire.
func sign(signer *msp.Signer, r *request, hdr []msp.HeaderField, body []byte) ([]msp.HeaderField, error) {
	m := msp.Message{Method: r.method, RawURI: r.uri, Header: hdr, Body: body}
	auth, err := signer.Sign(&m)
	if err != nil {
		return hdr, err
	}
	return append(hdr, msp.HeaderField{Name: msp.HeaderAuthorization, Value: auth}), nil
}

// auditBufs recycles the buffers audit lines are encoded into; AuditLog
// writers must not keep the slice (io.Writer's contract).
var auditBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeDeny answers 403 with the short JSON body naming the rule set.
func (cc *clientConn) writeDeny(ep msp.Endpoint, d msp.Decision) {
	body, _ := json.Marshal(denyBody{Error: "Forbidden", Endpoint: ep.String(), Mode: d.Mode.String(),
		RuleSetID: d.RuleSetID, Reason: d.Reason.String()})
	cc.writeSimple(http.StatusForbidden, []msp.HeaderField{{Name: "Content-Type", Value: "application/json; charset=utf-8"}}, body, true)
}

// refreshed asks for a snapshot whose key differs from stale's, within
// RefreshTimeout; nil when none came.
func (cc *clientConn) refreshed(ctx context.Context, stale *keylatch.Snapshot) *keylatch.Snapshot {
	ctx, cancel := context.WithTimeout(ctx, cc.srv.cfg.RefreshTimeout)
	defer cancel()
	fresh := cc.srv.cfg.Latch.WaitNewKey(ctx, stale)
	if fresh == nil || fresh.Signer == nil || fresh.Key.GUID == stale.Key.GUID {
		cc.logger().Warn("proxy: the host refused a signature and no newer key came", "key", stale.Key.GUID, "err", ctx.Err())
		return nil
	}
	cc.logger().Info("proxy: the host refused a signature; retrying under the newer key", "stale", stale.Key.GUID, "key", fresh.Key.GUID)
	return fresh
}

type denyBody struct {
	Error     string `json:"error"`
	Endpoint  string `json:"endpoint"`
	Mode      string `json:"mode"`
	RuleSetID string `json:"ruleSetId"`
	Reason    string `json:"reason"`
}

func hostOf(ap netip.AddrPort) string {
	if ap.Port() == 80 {
		return ap.Addr().String()
	}
	return ap.String()
}

// newRecord starts the audit record of a request; r may be nil for a
// request that could not be parsed.
func (cc *clientConn) newRecord(r *request, start time.Time) *msp.AuditRecord {
	rec := &cc.rec
	*rec = msp.AuditRecord{Time: start, IP: "None"}
	if r != nil {
		rec.Method, rec.URL = r.method, r.uri
	}
	if cc.clientIP == "" {
		ap := remoteAddrPort(cc.nc)
		cc.clientIP, cc.clientPort = ap.Addr().Unmap().String(), ap.Port()
		cc.endpoint = msp.EndpointNone.String()
		if c := cc.caller; c != nil {
			cc.dstIP, cc.endpoint = c.OriginalDst.Addr().String(), msp.Classify(c.OriginalDst).String()
		}
	}
	rec.ClientIP, rec.ClientPort, rec.Endpoint = cc.clientIP, cc.clientPort, cc.endpoint
	if c := cc.caller; c != nil {
		rec.IP, rec.Port = cc.dstIP, c.OriginalDst.Port()
		rec.UserID, rec.UserName, rec.UserGroups = c.Claims.UserID, c.Claims.UserName, c.Claims.UserGroups
		rec.ProcessFullPath, rec.ProcessCmdLine, rec.RunAsElevated = c.Claims.ProcessFullPath, c.Claims.ProcessCmdLine, c.Claims.RunAsElevated
	} else {
		rec.UserName, rec.ProcessFullPath, rec.ProcessCmdLine = "empty", "empty", "empty"
		rec.UserGroups = []string{}
	}
	return rec
}

// finish completes and emits the audit record.
func (cc *clientConn) finish(rec *msp.AuditRecord, status int) {
	s := cc.srv
	el := time.Since(rec.Time)
	rec.ElapsedTime, rec.ElapsedMicros = el.Milliseconds(), el.Microseconds()
	rec.StatusCode = status
	rec.ResponseStatus = statusLine(status)
	s.cfg.Metrics.RequestDone(rec.Endpoint, rec.Decision, status, el)
	if s.cfg.AuditLog != nil {
		bp := auditBufs.Get().(*[]byte)
		b := append(rec.AppendJSON((*bp)[:0]), '\n')
		if _, err := s.cfg.AuditLog.Write(b); err != nil {
			cc.logger().Warn("proxy: cannot write connection log", "err", err)
		}
		*bp = b
		auditBufs.Put(bp)
	}
	if s.cfg.Summaries != nil {
		s.cfg.Summaries.Add(rec)
	}
}

// writeSimple writes a complete response generated by the proxy itself.
func (cc *clientConn) writeSimple(status int, hdr []msp.HeaderField, body []byte, closeConn bool) {
	_ = writeResponse(cc.bw, status, hdr, body, closeConn, false)
}

// writeResponse writes and flushes a complete response with a
// Content-Length. For a HEAD request (head) the body is counted but not
// sent.
func writeResponse(w *bufio.Writer, status int, hdr []msp.HeaderField, body []byte, closeConn, head bool) error {
	w.WriteString("HTTP/1.1 ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(status), 10))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(status))
	w.WriteString("\r\n")
	for _, h := range hdr {
		writeHeader(w, h.Name, h.Value)
	}
	writeHeaderInt(w, "Content-Length", int64(len(body)))
	if closeConn {
		writeHeader(w, "Connection", "close")
	}
	w.WriteString("\r\n")
	if !head {
		w.Write(body)
	}
	return w.Flush()
}

func writeHeader(w *bufio.Writer, name, value string) {
	w.WriteString(name)
	w.WriteString(": ")
	w.WriteString(value)
	w.WriteString("\r\n")
}

// writeHeaderInt writes a field with a decimal value formatted in w's own
// buffer: strconv.FormatInt allocates for 100 and above, so relaying a
// host's Content-Length was an allocation per response.
func writeHeaderInt(w *bufio.Writer, name string, value int64) {
	w.WriteString(name)
	w.WriteString(": ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), value, 10))
	w.WriteString("\r\n")
}

// hasBody reports whether the request announced a body.
func (r *request) hasBody() bool { return r.chunked || r.contentLength > 0 }

func (r *request) get(name string) (string, bool) {
	for i := len(r.header) - 1; i >= 0; i-- {
		if strings.EqualFold(r.header[i].Name, name) {
			return r.header[i].Value, true
		}
	}
	return "", false
}

// serveProvision answers GET /provision through the configured handler.
func (cc *clientConn) serveProvision(ctx context.Context, r *request) (int, bool) {
	if _, ok := r.get("Metadata"); !ok {
		cc.writeSimple(http.StatusBadRequest, nil, nil, true)
		return http.StatusBadRequest, false
	}
	h := cc.srv.cfg.Provision
	if h == nil {
		cc.writeSimple(http.StatusServiceUnavailable, nil, nil, true)
		return http.StatusServiceUnavailable, false
	}
	status, hdr, body, err := serveHandler(ctx, h, r.method, r, cc.nc.RemoteAddr().String())
	if err != nil {
		cc.writeSimple(http.StatusBadRequest, nil, nil, true)
		return http.StatusBadRequest, false
	}
	closeConn := r.close || r.hasBody() || status >= 400
	cc.writeSimple(status, hdr, body, closeConn)
	return status, !closeConn
}

// serveHandler runs one of the agent's local http.Handlers for r, with
// method and r's header fields, and returns its buffered answer without
// the framing fields the proxy writes itself. As with net/http, the
// request's context ends when the handler returns.
func serveHandler(ctx context.Context, h http.Handler, method string, r *request, remote string) (int, []msp.HeaderField, []byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, method, r.uri, http.NoBody)
	if err != nil {
		return 0, nil, nil, err
	}
	for _, f := range r.header {
		hr.Header.Add(f.Name, f.Value)
	}
	hr.RemoteAddr = remote
	rw := &bufferedResponse{header: make(http.Header)}
	h.ServeHTTP(rw, hr)
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	var hdr []msp.HeaderField
	for k, vs := range rw.header {
		if strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "Connection") {
			continue
		}
		for _, v := range vs {
			hdr = append(hdr, msp.HeaderField{Name: k, Value: v})
		}
	}
	return rw.status, hdr, rw.body, nil
}

// serveAggregateStatus answers GET /gpa-aggregated-status (docs/protocol.md
// §4.3 step 5): the Metadata header is required, and only elevated callers
// may read the status.
func (cc *clientConn) serveAggregateStatus(ctx context.Context, r *request) (int, bool) {
	if _, ok := r.get("Metadata"); !ok {
		cc.writeSimple(http.StatusBadRequest, nil, nil, true)
		return http.StatusBadRequest, false
	}
	if cc.caller == nil || !cc.caller.Claims.RunAsElevated {
		cc.writeSimple(http.StatusForbidden, nil, nil, true)
		return http.StatusForbidden, false
	}
	f := cc.srv.cfg.AggregateStatus
	if f == nil {
		cc.writeSimple(http.StatusServiceUnavailable, nil, nil, true)
		return http.StatusServiceUnavailable, false
	}
	// What f starts ends with the request; the connection's context is
	// the server's.
	fctx, cancel := context.WithCancel(ctx)
	body, err := f(fctx)
	cancel()
	if err != nil {
		cc.logger().Warn("proxy: aggregate status unavailable", "err", err)
		cc.writeSimple(http.StatusInternalServerError, nil, nil, true)
		return http.StatusInternalServerError, false
	}
	closeConn := r.close || r.hasBody()
	cc.writeSimple(http.StatusOK, []msp.HeaderField{{Name: "Content-Type", Value: "application/json; charset=utf-8"}}, body, closeConn)
	return http.StatusOK, !closeConn
}

// bufferedResponse is the http.ResponseWriter handed to the Provision
// handler; the proxy writes the result itself.
type bufferedResponse struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

// errBodyTooLarge is a request body over the limit (413).
var errBodyTooLarge = errors.New("proxy: request body too large")

// readBody reads the whole request body, up to limit bytes.
func (cc *clientConn) readBody(r *request, limit int64) ([]byte, error) {
	if !r.hasBody() {
		return nil, nil
	}
	if r.expect100 {
		cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := cc.bw.Flush(); err != nil {
			return nil, err
		}
	}
	defer cc.bodyDeadlines()()
	if !r.chunked {
		buf := make([]byte, r.contentLength)
		_, err := io.ReadFull(cc.br, buf)
		return buf, err
	}
	// The chunked reader must read from cc.br itself: given anything else
	// it adds its own buffer, which would swallow the trailers and the next
	// request.
	body, err := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(cc.br), limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, errBodyTooLarge
	}
	if err := readTrailers(cc.br, cc.srv.cfg.MaxHeaderBytes); err != nil {
		return nil, err
	}
	return body, nil
}

// forward sends the request to the host endpoint, with the claims and date
// headers and, unless it is a skip-sig request, the signature, and relays
// the response. It returns the status the client got and whether the client
// connection stays open.
func (cc *clientConn) forward(ctx context.Context, r *request, rec *msp.AuditRecord, snap *keylatch.Snapshot, dst netip.AddrPort, ep msp.Endpoint, skipSig bool) (int, bool) {
	s := cc.srv
	limit := s.cfg.MaxBodyBytes
	if skipSig {
		limit = s.cfg.MaxSkipSigBodyBytes
	}
	if r.hadCL && r.contentLength > limit {
		rec.ErrorDetails = "request body too large"
		cc.writeSimple(http.StatusRequestEntityTooLarge, nil, nil, true)
		return http.StatusRequestEntityTooLarge, false
	}

	hdr := make([]msp.HeaderField, 0, len(r.header)+5)
	hdr = append(hdr, r.header...)
	if _, ok := r.get("Host"); !ok {
		hdr = append(hdr, msp.HeaderField{Name: "Host", Value: hostOf(dst)})
	}
	hdr = append(hdr,
		msp.HeaderField{Name: msp.HeaderClaims, Value: msp.ClaimsHeaderValue(cc.caller.Claims.RunAsElevated)},
		msp.HeaderField{Name: msp.HeaderDate, Value: s.hostDate()})

	var body []byte
	if !skipSig {
		var err error
		body, err = cc.readBody(r, limit)
		if err != nil {
			if errors.Is(err, errBodyTooLarge) {
				rec.ErrorDetails = "request body too large"
				cc.writeSimple(http.StatusRequestEntityTooLarge, nil, nil, true)
				return http.StatusRequestEntityTooLarge, false
			}
			rec.ErrorDetails = "reading request body: " + err.Error()
			cc.writeSimple(http.StatusBadRequest, nil, nil, true)
			return http.StatusBadRequest, false
		}
		if r.hadCL || len(body) > 0 {
			hdr = append(hdr, msp.HeaderField{Name: "Content-Length", Value: strconv.Itoa(len(body))})
		}
		if snap.Signer != nil {
			if hdr, err = sign(snap.Signer, r, hdr, body); err != nil {
				rec.ErrorDetails = "signing: " + err.Error()
				cc.writeSimple(http.StatusBadGateway, nil, nil, true)
				return http.StatusBadGateway, false
			}
			rec.Signed = true
		}
	} else {
		switch {
		case r.chunked:
			hdr = append(hdr, msp.HeaderField{Name: "Transfer-Encoding", Value: "chunked"})
		case r.hadCL:
			hdr = append(hdr, msp.HeaderField{Name: "Content-Length", Value: strconv.FormatInt(r.contentLength, 10)})
		}
	}

	resp, uc, kind, err := cc.roundTrip(ctx, r, hdr, body, dst, skipSig, limit)
	if err == nil && resp.code == http.StatusUnauthorized && rec.Signed {
		if fresh := cc.refreshed(ctx, snap); fresh != nil {
			// The host has not processed a request it refused, so sending it
			// again is safe; the old response is dropped with its connection.
			uc.conn.Close()
			rec.Retried = true
			if d := cc.decide(fresh, ep, r, rec); d.Verdict == msp.VerdictDeny {
				rec.ErrorDetails = "Block unauthorized request"
				cc.writeDeny(ep, d)
				return http.StatusForbidden, false
			}
			hdr = slices.DeleteFunc(hdr, func(h msp.HeaderField) bool {
				return strings.EqualFold(h.Name, msp.HeaderDate) || strings.EqualFold(h.Name, msp.HeaderAuthorization)
			})
			hdr = append(hdr, msp.HeaderField{Name: msp.HeaderDate, Value: s.hostDate()})
			if hdr, err = sign(fresh.Signer, r, hdr, body); err != nil {
				rec.ErrorDetails = "signing: " + err.Error()
				cc.writeSimple(http.StatusBadGateway, nil, nil, true)
				return http.StatusBadGateway, false
			}
			resp, uc, kind, err = cc.roundTrip(ctx, r, hdr, body, dst, false, limit)
		}
	}
	if err != nil {
		s.cfg.Metrics.UpstreamError(ep, kind)
		rec.ErrorDetails = "upstream " + kind + ": " + err.Error()
		st := statusForUpstream(kind)
		if kind == "body" {
			if errors.Is(err, errBodyTooLarge) {
				st = http.StatusRequestEntityTooLarge
			} else {
				st = http.StatusBadRequest
			}
		}
		cc.writeSimple(st, nil, nil, true)
		return st, false
	}
	rec.Forwarded = true
	keep, err := cc.relay(r, resp, uc)
	if err != nil {
		s.cfg.Metrics.UpstreamError(ep, "response")
		rec.ErrorDetails = "relaying response: " + err.Error()
		return resp.code, false
	}
	return resp.code, keep
}

func statusForUpstream(kind string) int {
	switch kind {
	case "dial", "closed":
		return http.StatusBadGateway
	case "timeout":
		return http.StatusGatewayTimeout
	}
	return http.StatusServiceUnavailable
}

// roundTrip writes the request upstream and reads the response head. A
// buffered request that fails on a reused keep-alive connection before any
// response byte arrived is retried once on a new connection: the host
// closed the idle connection as we picked it. kind classifies failures:
// dial, closed, timeout, send, or body (the client's streamed body failed).
func (cc *clientConn) roundTrip(ctx context.Context, r *request, hdr []msp.HeaderField, body []byte, dst netip.AddrPort, stream bool, limit int64) (*response, *upstreamConn, string, error) {
	s := cc.srv
	for attempt := 0; ; attempt++ {
		uc, err := s.pool.get(ctx, dst, stream)
		if err != nil {
			return nil, nil, "dial", err
		}
		uc.dr.timeout, uc.dw.timeout = s.cfg.ResponseTimeout, s.cfg.ResponseTimeout
		writeRequestHead(uc.bw, r.method, r.uri, hdr)
		var kind string
		if stream {
			if err = cc.streamBody(r, uc.bw, limit); err != nil {
				uc.conn.Close()
				return nil, nil, "body", err
			}
		} else {
			uc.bw.Write(body)
		}
		err = uc.bw.Flush()
		var resp *response
		if err == nil {
			resp, err = readResponse(uc.br, r.method)
		}
		if err == nil {
			return resp, uc, "", nil
		}
		uc.conn.Close()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			kind = "timeout"
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err):
			kind = "closed"
		default:
			kind = "send"
		}
		if kind == "closed" && uc.reused && !stream && attempt == 0 {
			continue
		}
		return nil, nil, kind, err
	}
}

// isReset reports whether the host reset the connection or closed it
// under a write.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENETRESET) || errors.Is(err, syscall.EPIPE)
}

func writeRequestHead(w *bufio.Writer, method, uri string, hdr []msp.HeaderField) {
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(uri)
	w.WriteString(" HTTP/1.1\r\n")
	for _, h := range hdr {
		writeHeader(w, h.Name, h.Value)
	}
	w.WriteString("\r\n")
}

// streamBody copies a skip-sig request body upstream as it arrives.
func (cc *clientConn) streamBody(r *request, w *bufio.Writer, limit int64) error {
	if !r.hasBody() {
		return nil
	}
	if r.expect100 {
		cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := cc.bw.Flush(); err != nil {
			return err
		}
	}
	defer cc.bodyDeadlines()()
	if !r.chunked {
		_, err := io.CopyN(w, cc.br, r.contentLength)
		return err
	}
	cw := httputil.NewChunkedWriter(w)
	n, err := io.Copy(cw, io.LimitReader(httputil.NewChunkedReader(cc.br), limit+1))
	if err != nil {
		return err
	}
	if n > limit {
		return errBodyTooLarge
	}
	if err := cw.Close(); err != nil {
		return err
	}
	w.WriteString("\r\n")
	return readTrailers(cc.br, cc.srv.cfg.MaxHeaderBytes)
}

// relay writes the host's response to the client with the response marker,
// and returns the upstream connection to the pool when its response was
// read completely.
func (cc *clientConn) relay(r *request, resp *response, uc *upstreamConn) (bool, error) {
	s := cc.srv
	keep := !r.close && !s.closing.Load()
	noBody := r.method == "HEAD" || resp.code == http.StatusNoContent || resp.code == http.StatusNotModified
	chunked := false
	w := cc.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(resp.status)
	w.WriteString("\r\n")
	// Fields the host's Connection header names are hop-by-hop too.
	for _, h := range resp.header {
		if isHopByHop(h.Name) || namedIn(resp.connTokens, h.Name) {
			continue
		}
		writeHeader(w, h.Name, h.Value)
	}
	writeHeader(w, msp.HeaderAuthorization, msp.ResponseMarker)
	switch {
	case noBody:
		if resp.contentLength >= 0 && r.method == "HEAD" {
			writeHeaderInt(w, "Content-Length", resp.contentLength)
		}
	case resp.contentLength >= 0:
		writeHeaderInt(w, "Content-Length", resp.contentLength)
	case r.proto == "HTTP/1.1":
		chunked = true
		writeHeader(w, "Transfer-Encoding", "chunked")
	default:
		keep = false // an HTTP/1.0 client reads to close
	}
	if !keep {
		writeHeader(w, "Connection", "close")
	}
	w.WriteString("\r\n")

	var err error
	if !noBody {
		if chunked {
			cw := httputil.NewChunkedWriter(w)
			if _, err = io.Copy(cw, resp.body); err == nil {
				err = cw.Close()
				w.WriteString("\r\n")
			}
		} else if resp.contentLength >= 0 {
			// resp.body stops at the length; a host that closes before it
			// leaves N over.
			if _, err = io.Copy(w, resp.body); err == nil && resp.lr.N > 0 {
				err = io.ErrUnexpectedEOF
			}
		} else {
			_, err = io.Copy(w, resp.body)
		}
	}
	if err != nil {
		// The host failed mid-response: the client must see a truncated
		// message, never a well-formed short one, so the connection is
		// cut without finishing the framing.
		uc.conn.Close()
		w.Flush()
		return false, err
	}
	if resp.close {
		uc.conn.Close()
	} else {
		s.pool.put(uc)
	}
	if err := w.Flush(); err != nil {
		return false, err
	}
	return keep, nil
}

// bodyDeadlines makes every read from the client extend the read deadline
// by BodyReadTimeout while a body is read, so a slow but steady upload
// works and a stalled one ends; the returned func restores the default.
func (cc *clientConn) bodyDeadlines() func() {
	cc.dr.timeout = cc.srv.cfg.BodyReadTimeout
	return func() {
		cc.dr.timeout = 0
		_ = cc.nc.SetReadDeadline(time.Time{})
	}
}
