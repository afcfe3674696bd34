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

	"github.com/metadatasec/gpa/internal/httpwire"
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

// canonCode is the CANON_* code of a canonicalisation error, for the log.
func canonCode(err error) string {
	var ce *msp.CanonError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return err.Error()
}

// handle runs the pipeline of docs/protocol.md §4.3 for one request and reports
// whether the connection stays open.
func (cc *clientConn) handle(ctx context.Context, r *httpwire.Request) (keep bool) {
	s := cc.srv
	start := time.Now()
	s.requests.Add(1)
	rec := cc.newRecord(r, start)
	status := 0
	defer func() { cc.finish(rec, status) }()

	// 1. Method allow-list.
	if !msp.MethodAllowed(r.Method) {
		status = http.StatusMethodNotAllowed
		cc.writeSimple(status, []msp.HeaderField{{Name: "Allow", Value: allowHeader},
			{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, []byte("Method Not Allowed"), true)
		return false
	}
	// 2. Traversal guard.
	if traversal(r.URI) {
		status = http.StatusForbidden
		rec.ErrorDetails = "path traversal"
		cc.writeSimple(status, nil, nil, true)
		return false
	}
	// 2b. Fail-closed guard, whatever the matcher: a target without a
	// canonical form (overlong UTF-8, a bad escape, NUL) is refused before
	// any matcher runs, so the legacy matcher's lossy decoding never
	// forwards it.
	if err := msp.CheckTarget(r.Method, r.URI); err != nil {
		status = http.StatusBadRequest
		rec.ErrorDetails = "request target has no canonical form: " + canonCode(err)
		cc.writeSimple(status, nil, nil, true)
		return false
	}
	// 3, 4. The agent's own endpoints, before the destination is looked at.
	if r.Authority == "" || cc.caller == nil || r.Authority == hostOf(cc.caller.OriginalDst) {
		switch r.URI {
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
	if r.Authority != "" && r.Authority != hostOf(dst) && r.Authority != dst.String() {
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
			"ruleSetId", d.RuleSetID, "uri", r.URI, "user", cc.caller.Claims.UserName)
	}

	skipSig := d.Reason == msp.ReasonSkipSig
	if !skipSig && snap.Signer == nil && d.Mode == msp.ModeEnforce {
		// The host refuses what is not signed for an endpoint in Enforce;
		// with no key yet (a restart before the host answers, an
		// acquisition that keeps failing) the client is asked to retry
		// rather than the request sent unsigned.
		status = http.StatusServiceUnavailable
		rec.ErrorDetails = "no key to sign with for an endpoint in Enforce"
		cc.writeSimple(status, []msp.HeaderField{{Name: "Retry-After", Value: retryAfterNoKey},
			{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}, []byte("no key latched yet; retry later\n"), true)
		return false
	}
	status, keep = cc.forward(ctx, r, rec, snap, dst, ep, skipSig)
	return keep
}

// retryAfterNoKey is the Retry-After of a request refused for want of a
// key, in seconds: the latch polls the host every second until it knows
// the state.
const retryAfterNoKey = "1"

// decide evaluates r under snap's rules and puts the decision, and the
// snapshot's epoch, in rec.
func (cc *clientConn) decide(snap *keylatch.Snapshot, ep msp.Endpoint, r *httpwire.Request, rec *msp.AuditRecord) msp.Decision {
	d := snap.Policy.Evaluate(ep, &msp.Request{Method: r.Method, RawURI: r.URI, Claims: &cc.caller.Claims})
	rec.Epoch = snap.Epoch
	rec.Decision, rec.Rule, rec.Reason = d.Verdict.String(), d.RuleSetID, d.Reason.String()
	rec.Privilege, rec.Identity, rec.Mode = d.Privilege, d.Identity, d.Mode.String()
	return d
}

// sign appends the signature under signer of the request that hdr and
// body put on the wire.
func sign(signer *msp.Signer, r *httpwire.Request, hdr []msp.HeaderField, body []byte) ([]msp.HeaderField, error) {
	m := msp.Message{Method: r.Method, RawURI: r.URI, Header: hdr, Body: body}
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
func (cc *clientConn) newRecord(r *httpwire.Request, start time.Time) *msp.AuditRecord {
	rec := &cc.rec
	*rec = msp.AuditRecord{Time: start, IP: "None"}
	if r != nil {
		rec.Method, rec.URL = r.Method, r.URI
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
		if cc.callerJSON == nil {
			cc.callerJSON = rec.AppendCallerJSON(make([]byte, 0, 256))
		}
		b := append(rec.AppendJSONCaller((*bp)[:0], cc.callerJSON), '\n')
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
	_ = httpwire.WriteResponse(cc.bw, status, hdr, body, closeConn, false)
}

// serveProvision answers GET /provision through the configured handler.
func (cc *clientConn) serveProvision(ctx context.Context, r *httpwire.Request) (int, bool) {
	if _, ok := r.Get("Metadata"); !ok {
		cc.writeSimple(http.StatusBadRequest, nil, nil, true)
		return http.StatusBadRequest, false
	}
	h := cc.srv.cfg.Provision
	if h == nil {
		cc.writeSimple(http.StatusServiceUnavailable, nil, nil, true)
		return http.StatusServiceUnavailable, false
	}
	status, hdr, body, err := httpwire.ServeHandler(ctx, h, r, &httpwire.ServeOptions{RemoteAddr: cc.nc.RemoteAddr().String()})
	if err != nil {
		cc.writeSimple(http.StatusBadRequest, nil, nil, true)
		return http.StatusBadRequest, false
	}
	closeConn := r.Close || r.HasBody() || status >= 400
	cc.writeSimple(status, httpwire.HeaderFields(hdr), body, closeConn)
	return status, !closeConn
}

// serveAggregateStatus answers GET /gpa-aggregated-status (docs/protocol.md
// §4.3 step 5): the Metadata header is required, and only elevated callers
// may read the status.
func (cc *clientConn) serveAggregateStatus(ctx context.Context, r *httpwire.Request) (int, bool) {
	if _, ok := r.Get("Metadata"); !ok {
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
	closeConn := r.Close || r.HasBody()
	cc.writeSimple(http.StatusOK, []msp.HeaderField{{Name: "Content-Type", Value: "application/json; charset=utf-8"}}, body, closeConn)
	return http.StatusOK, !closeConn
}

// readBody reads the whole request body, up to limit bytes.
func (cc *clientConn) readBody(r *httpwire.Request, limit int64) ([]byte, error) {
	if !r.HasBody() {
		return nil, nil
	}
	if r.Expect100 {
		cc.bw.WriteString(httpwire.Continue)
		if err := cc.bw.Flush(); err != nil {
			return nil, err
		}
	}
	defer cc.bodyDeadlines()()
	return httpwire.ReadBody(cc.br, r, limit, cc.srv.cfg.MaxHeaderBytes)
}

// forward sends the request to the host endpoint, with the claims and date
// headers and, unless it is a skip-sig request, the signature, and relays
// the response. It returns the status the client got and whether the client
// connection stays open.
func (cc *clientConn) forward(ctx context.Context, r *httpwire.Request, rec *msp.AuditRecord, snap *keylatch.Snapshot, dst netip.AddrPort, ep msp.Endpoint, skipSig bool) (int, bool) {
	s := cc.srv
	limit := s.cfg.MaxBodyBytes
	if skipSig {
		limit = s.cfg.MaxSkipSigBodyBytes
	}
	if r.HadCL && r.ContentLength > limit {
		rec.ErrorDetails = "request body too large"
		cc.writeSimple(http.StatusRequestEntityTooLarge, nil, nil, true)
		return http.StatusRequestEntityTooLarge, false
	}

	hdr := append(cc.hdr[:0], r.Header...)
	defer func() {
		// Kept for the next request, without the strings of this one.
		clear(hdr)
		cc.hdr = hdr[:0]
	}()
	if _, ok := r.Get("Host"); !ok {
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
			if errors.Is(err, httpwire.ErrBodyTooLarge) {
				rec.ErrorDetails = "request body too large"
				cc.writeSimple(http.StatusRequestEntityTooLarge, nil, nil, true)
				return http.StatusRequestEntityTooLarge, false
			}
			rec.ErrorDetails = "reading request body: " + err.Error()
			cc.writeSimple(http.StatusBadRequest, nil, nil, true)
			return http.StatusBadRequest, false
		}
		if r.HadCL || len(body) > 0 {
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
		case r.Chunked:
			hdr = append(hdr, msp.HeaderField{Name: "Transfer-Encoding", Value: "chunked"})
		case r.HadCL:
			hdr = append(hdr, msp.HeaderField{Name: "Content-Length", Value: strconv.FormatInt(r.ContentLength, 10)})
		}
	}

	resp, uc, kind, err := cc.roundTrip(ctx, r, hdr, body, dst, skipSig, limit)
	if err == nil && resp.Code == http.StatusUnauthorized && rec.Signed {
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
			if errors.Is(err, httpwire.ErrBodyTooLarge) {
				st = http.StatusRequestEntityTooLarge
			} else {
				st = http.StatusBadRequest
			}
		}
		cc.writeSimple(st, nil, nil, true)
		return st, false
	}
	rec.Forwarded = true
	// resp belongs to uc, which relay hands back to the pool for another
	// request to reuse.
	code := resp.Code
	keep, err := cc.relay(r, resp, uc)
	if err != nil {
		s.cfg.Metrics.UpstreamError(ep, "response")
		rec.ErrorDetails = "relaying response: " + err.Error()
		return code, false
	}
	return code, keep
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
func (cc *clientConn) roundTrip(ctx context.Context, r *httpwire.Request, hdr []msp.HeaderField, body []byte, dst netip.AddrPort, stream bool, limit int64) (*httpwire.Response, *upstreamConn, string, error) {
	s := cc.srv
	for attempt := 0; ; attempt++ {
		uc, err := s.pool.get(ctx, dst, stream)
		if err != nil {
			return nil, nil, "dial", err
		}
		uc.dr.timeout, uc.dw.timeout = s.cfg.ResponseTimeout, s.cfg.ResponseTimeout
		httpwire.WriteRequestHead(uc.bw, r.Method, r.URI, hdr)
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
		if err == nil {
			err = httpwire.ReadResponseInto(uc.br, r.Method, &uc.resp)
		}
		if err == nil {
			return &uc.resp, uc, "", nil
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

// streamBody copies a skip-sig request body upstream as it arrives.
func (cc *clientConn) streamBody(r *httpwire.Request, w *bufio.Writer, limit int64) error {
	if !r.HasBody() {
		return nil
	}
	if r.Expect100 {
		cc.bw.WriteString(httpwire.Continue)
		if err := cc.bw.Flush(); err != nil {
			return err
		}
	}
	defer cc.bodyDeadlines()()
	if !r.Chunked {
		_, err := io.CopyN(w, cc.br, r.ContentLength)
		return err
	}
	cw := httputil.NewChunkedWriter(w)
	n, err := io.Copy(cw, io.LimitReader(httputil.NewChunkedReader(cc.br), limit+1))
	if err != nil {
		return err
	}
	if n > limit {
		return httpwire.ErrBodyTooLarge
	}
	if err := cw.Close(); err != nil {
		return err
	}
	w.WriteString("\r\n")
	return httpwire.ReadTrailers(cc.br, cc.srv.cfg.MaxHeaderBytes)
}

// relay writes the host's response to the client with the response marker,
// and returns the upstream connection to the pool when its response was
// read completely.
func (cc *clientConn) relay(r *httpwire.Request, resp *httpwire.Response, uc *upstreamConn) (bool, error) {
	s := cc.srv
	keep := !r.Close && !s.closing.Load()
	noBody := r.Method == "HEAD" || resp.Code == http.StatusNoContent || resp.Code == http.StatusNotModified
	chunked := false
	w := cc.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(resp.Status)
	w.WriteString("\r\n")
	// Fields the host's Connection header names are hop-by-hop too.
	for _, h := range resp.Header {
		if isResponseHopByHop(h.Name) || httpwire.HasToken(resp.ConnTokens, h.Name) {
			continue
		}
		httpwire.WriteField(w, h.Name, h.Value)
	}
	httpwire.WriteField(w, msp.HeaderAuthorization, msp.ResponseMarker)
	switch {
	case noBody:
		if resp.ContentLength >= 0 && r.Method == "HEAD" {
			httpwire.WriteFieldInt(w, "Content-Length", resp.ContentLength)
		}
	case resp.ContentLength >= 0:
		httpwire.WriteFieldInt(w, "Content-Length", resp.ContentLength)
	case r.Proto == "HTTP/1.1":
		chunked = true
		httpwire.WriteField(w, "Transfer-Encoding", "chunked")
	default:
		keep = false // an HTTP/1.0 client reads to close
	}
	if !keep {
		httpwire.WriteField(w, "Connection", "close")
	}
	w.WriteString("\r\n")

	var err error
	if !noBody {
		if chunked {
			cw := httputil.NewChunkedWriter(w)
			if _, err = io.Copy(cw, resp.Body); err == nil {
				err = cw.Close()
				w.WriteString("\r\n")
			}
		} else if resp.ContentLength >= 0 {
			// resp.Body stops at the length, and fails with
			// io.ErrUnexpectedEOF when the host closes before it.
			_, err = io.Copy(w, resp.Body)
		} else {
			_, err = io.Copy(w, resp.Body)
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
	if resp.Close {
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
		cc.dr.clear()
	}
}
