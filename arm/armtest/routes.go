package armtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// route is a parsed request path.
type route struct {
	kind   kind
	key    string // lowercased resource path
	list   kind   // non-zero for a collection GET
	action string // "instanceView", "manualupgrade", "operation"
	sub    string
	opID   string
	parent string // lowercased parent key for children
}

// parsePath understands the paths this fake serves.
func parsePath(p string) (route, error) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	eq := func(i int, s string) bool { return i < len(segs) && strings.EqualFold(segs[i], s) }
	var rt route
	if len(segs) < 2 || !eq(0, "subscriptions") {
		return rt, fmt.Errorf("unsupported path")
	}
	rt.sub = segs[1]
	// operation status: /subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/operations/{id}
	if len(segs) == 8 && eq(2, "providers") && eq(3, "Microsoft.Compute") && eq(4, "locations") && eq(6, "operations") {
		rt.action, rt.opID = "operation", segs[7]
		return rt, nil
	}
	if len(segs) < 8 || !eq(2, "resourceGroups") || !eq(4, "providers") || !eq(5, "Microsoft.Compute") {
		return rt, fmt.Errorf("unsupported path")
	}
	rest := segs[6:]
	key := func(n int) string { return "/" + strings.ToLower(strings.Join(segs[:6+n], "/")) }
	is := func(i int, s string) bool { return i < len(rest) && strings.EqualFold(rest[i], s) }
	switch {
	case is(0, "virtualMachines") && len(rest) == 2:
		rt.kind, rt.key = kindVM, key(2)
	case is(0, "virtualMachines") && len(rest) == 3 && is(2, "instanceView"):
		rt.kind, rt.key, rt.action = kindVM, key(2), "instanceView"
	case is(0, "virtualMachineScaleSets") && len(rest) == 2:
		rt.kind, rt.key = kindScaleSet, key(2)
	case is(0, "virtualMachineScaleSets") && len(rest) == 3 && is(2, "manualupgrade"):
		rt.kind, rt.key, rt.action = kindScaleSet, key(2), "manualupgrade"
	case is(0, "virtualMachineScaleSets") && len(rest) == 3 && is(2, "virtualMachines"):
		rt.list, rt.parent = kindInstance, key(2)
	case is(0, "virtualMachineScaleSets") && len(rest) == 4 && is(2, "virtualMachines"):
		rt.kind, rt.key, rt.parent = kindInstance, key(4), key(2)
	case is(0, "virtualMachineScaleSets") && len(rest) == 5 && is(2, "virtualMachines") && is(4, "instanceView"):
		rt.kind, rt.key, rt.action = kindInstance, key(4), "instanceView"
	case is(0, "galleries") && len(rest) == 2:
		rt.kind, rt.key = kindGallery, key(2)
	case is(0, "galleries") && len(rest) == 3 && is(2, "inVMAccessControlProfiles"):
		rt.list, rt.parent = kindProfile, key(2)
	case is(0, "galleries") && len(rest) == 4 && is(2, "inVMAccessControlProfiles"):
		rt.kind, rt.key, rt.parent = kindProfile, key(4), key(2)
	case is(0, "galleries") && len(rest) == 5 && is(2, "inVMAccessControlProfiles") && is(4, "versions"):
		rt.list, rt.parent = kindVersion, key(4)
	case is(0, "galleries") && len(rest) == 6 && is(2, "inVMAccessControlProfiles") && is(4, "versions"):
		rt.kind, rt.key, rt.parent = kindVersion, key(6), key(4)
	default:
		return rt, fmt.Errorf("unsupported path")
	}
	return rt, nil
}

// endpoint is one entry of the route table: the requests it serves and the
// handler that answers them. Handlers run with s.mu held and either write a
// reply or return the error to write.
type endpoint struct {
	method string // "" for any
	match  func(route) bool
	// poll marks operation-status reads, which FailNextRequest skips.
	poll  bool
	serve func(s *Server, w http.ResponseWriter, r *http.Request, rt route, body []byte) *ServiceError
}

// endpoints is the one place that says which handler serves which request;
// the first match wins. A new endpoint is a parsePath case and a line here.
var endpoints = []endpoint{
	{poll: true, match: func(rt route) bool { return rt.action == "operation" }, serve: (*Server).serveOperation},
	{method: http.MethodGet, match: func(rt route) bool { return rt.list != 0 }, serve: (*Server).serveList},
	{method: http.MethodGet, match: func(rt route) bool { return rt.action == "instanceView" }, serve: (*Server).serveInstanceView},
	{method: http.MethodPost, match: func(rt route) bool { return rt.action == "manualupgrade" }, serve: (*Server).serveManualUpgrade},
	{method: http.MethodGet, match: func(rt route) bool { return rt.action == "" }, serve: (*Server).serveGet},
	{method: http.MethodPatch, match: isResource(kindVM, kindScaleSet), serve: (*Server).servePatch},
	{method: http.MethodPut, match: isResource(kindInstance), serve: (*Server).serveInstancePut},
	{method: http.MethodPut, match: isResource(kindProfile, kindVersion), serve: (*Server).serveGalleryPut},
	{method: http.MethodDelete, match: isResource(kindProfile, kindVersion), serve: (*Server).serveGalleryDelete},
}

// isResource matches a plain resource path (no action) of one of kinds.
func isResource(kinds ...kind) func(route) bool {
	return func(rt route) bool { return rt.action == "" && rt.list == 0 && slices.Contains(kinds, rt.kind) }
}

// serve checks what ARM checks on every request (throttling, a bearer
// token, api-version, a known path), then hands the request to the first
// matching endpoint.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		writeError(w, &ServiceError{Status: http.StatusBadRequest, Code: "InvalidRequestContent", Message: err.Error()})
		return
	}
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()}
	if len(body) > 0 {
		rec.Body = body
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, rec)
	if s.serveFleet(w, r, body) {
		return
	}

	if s.throttle > 0 {
		s.throttle--
		ms := s.retryAfter.Milliseconds()
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(s.retryAfter.Seconds())), 10))
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(ms, 10))
		writeError(w, &ServiceError{Status: http.StatusTooManyRequests, Code: "TooManyRequests", Message: "The request is being throttled."})
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		writeError(w, &ServiceError{Status: http.StatusUnauthorized, Code: "AuthenticationFailed", Message: "Authentication failed. The Authorization header is missing."})
		return
	}
	if rec.APIVersion() == "" {
		writeError(w, &ServiceError{Status: http.StatusBadRequest, Code: "MissingApiVersionParameter", Message: "The api-version query parameter (?api-version=) is required for all requests."})
		return
	}
	rt, err := parsePath(r.URL.Path)
	if err != nil {
		writeError(w, &ServiceError{Status: http.StatusNotFound, Code: "InvalidResourceType", Message: "The resource type could not be found."})
		return
	}
	i := slices.IndexFunc(endpoints, func(ep endpoint) bool { return (ep.method == "" || ep.method == r.Method) && ep.match(rt) })
	if i < 0 || !endpoints[i].poll {
		if e := s.failNextReq; e != nil && (e.Method == "" || e.Method == r.Method) {
			s.failNextReq = nil
			writeError(w, e)
			return
		}
	}
	if i < 0 {
		writeError(w, &ServiceError{Status: http.StatusMethodNotAllowed, Code: "MethodNotAllowed", Message: r.Method + " is not supported on this resource in the fake."})
		return
	}
	if e := endpoints[i].serve(s, w, r, rt, body); e != nil {
		writeError(w, e)
	}
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, rt route, _ []byte) *ServiceError {
	res, ok := s.res[rt.key]
	if !ok {
		return notFound(r.URL.Path)
	}
	writeJSON(w, http.StatusOK, res.body, nil)
	return nil
}

func notFound(path string) *ServiceError {
	return &ServiceError{Status: http.StatusNotFound, Code: "ResourceNotFound", Message: fmt.Sprintf("The resource '%s' was not found.", path)}
}

func badRequest(code, target, format string, args ...any) *ServiceError {
	return &ServiceError{Status: http.StatusBadRequest, Code: code, Target: target, Message: fmt.Sprintf(format, args...)}
}

// checkIfMatch answers 412 when If-Match names another etag.
func checkIfMatch(r *http.Request, res *resource) *ServiceError {
	want := r.Header.Get("If-Match")
	if want == "" || want == "*" {
		return nil
	}
	if have, _ := res.body["etag"].(string); have != want {
		return &ServiceError{Status: http.StatusPreconditionFailed, Code: "PreconditionFailed",
			Message: "The specified precondition 'If-Match' does not match the resource's current etag."}
	}
	return nil
}

func decodeObject(body []byte) (map[string]any, *ServiceError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, badRequest("InvalidRequestContent", "", "The request content was invalid and could not be deserialized.")
	}
	return m, nil
}

func writeJSON(w http.ResponseWriter, status int, v any, h http.Header) {
	for k, vs := range h {
		w.Header()[k] = vs
	}
	if v == nil {
		w.WriteHeader(status)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, e *ServiceError) {
	body := map[string]any{"code": e.Code, "message": e.Message}
	if e.Target != "" {
		body["target"] = e.Target
	}
	w.Header().Set("x-ms-error-code", e.Code)
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, map[string]any{"error": body}, nil)
}
