package armtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Audience is the token audience the server's cloud configuration names.
const Audience = "https://management.core.windows.net/"

// Options configures a Server; nil is fine.
type Options struct {
	// LROPolls is how many operation-status reads report InProgress before
	// an operation ends. Default 1.
	LROPolls int
	// PageSize is the number of items per list page. Default 100.
	PageSize int
	// GuestAutoLatch makes the simulated guest agent report the resource's
	// keyIncarnationId and modes in the instance view whenever an update
	// operation on a VM or scale-set instance succeeds.
	GuestAutoLatch bool
}

// Request is one request the server received.
type Request struct {
	Method string
	// Path is the URL path as sent.
	Path   string
	Query  url.Values
	Header http.Header
	// Body is the request body; nil when there was none.
	Body []byte
}

// APIVersion returns the api-version query parameter.
func (r Request) APIVersion() string { return r.Query.Get("api-version") }

// Server is an in-memory fake of the ARM endpoints for MSP settings: VMs,
// scale sets and their instances, gallery inVMAccessControlProfiles and
// versions, and the operation-status resources of their LROs. It validates
// writes as the service does and answers with ARM error bodies. It serves TLS
// on loopback only. All methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, https://127.0.0.1:port.
	URL string

	ts *httptest.Server

	mu                 sync.Mutex
	opts               Options
	res                map[string]*resource
	ops                map[string]*operation
	reqs               []Request
	seq                int
	throttle           int
	retryAfter         time.Duration
	failNextOp         *ServiceError
	failNextReq        *ServiceError
	unregistered       map[string]bool
	unsupportedRegions map[string]bool
}

type kind int

const (
	kindVM kind = iota + 1
	kindScaleSet
	kindInstance
	kindGallery
	kindProfile
	kindVersion
)

type resource struct {
	kind  kind
	body  map[string]any
	guest map[string]any // instance-view substatus message
}

type operation struct {
	id, resKey string
	left       int
	fail       *ServiceError
	done       bool
	delete     bool
	guest      bool
}

// ServiceError is an ARM error the server answers with.
type ServiceError struct {
	// Method, when set, limits FailNextRequest to requests with this method.
	Method  string
	Status  int
	Code    string
	Message string
	Target  string
}

// NewServer starts a fake on loopback with TLS. Close it when done.
func NewServer(options *Options) *Server {
	s := &Server{
		res:                map[string]*resource{},
		ops:                map[string]*operation{},
		unregistered:       map[string]bool{},
		unsupportedRegions: map[string]bool{},
	}
	if options != nil {
		s.opts = *options
	}
	if s.opts.LROPolls <= 0 {
		s.opts.LROPolls = 1
	}
	if s.opts.PageSize <= 0 {
		s.opts.PageSize = 100
	}
	s.ts = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.ts.Close() }

// ClientOptions returns azcore options that point an ARM client at the
// server, trust its certificate, skip RP registration and retry quickly.
func (s *Server) ClientOptions() azarm.ClientOptions {
	return azarm.ClientOptions{
		ClientOptions: policy.ClientOptions{
			Cloud: cloud.Configuration{Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: s.URL, Audience: Audience},
			}},
			Transport: s.ts.Client(),
			Retry:     policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
		},
		DisableRPRegistration: true,
	}
}

// Requests returns a copy of every request received so far, in order,
// including operation-status polls.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// SetLROPolls changes how many polls later operations take.
func (s *Server) SetLROPolls(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.LROPolls = max(n, 0)
}

// Throttle answers the next n requests with 429 and Retry-After.
func (s *Server) Throttle(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle, s.retryAfter = n, retryAfter
}

// FailNextOperation makes the next LRO the server starts end as Failed with
// this error (Status is ignored).
func (s *Server) FailNextOperation(code, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNextOp = &ServiceError{Code: code, Message: message}
}

// FailNextRequest answers the next request other than an operation-status
// poll (with e.Method, if set) with this error.
func (s *Server) FailNextRequest(e ServiceError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNextReq = &e
}

// SetFeatureRegistered says whether the subscription is registered for the
// ProxyAgent feature; subscriptions are registered unless told otherwise.
func (s *Server) SetFeatureRegistered(subscriptionID string, registered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregistered[strings.ToLower(subscriptionID)] = !registered
}

// SetRegionSupported says whether MSP can be enabled in region; every region
// is supported unless told otherwise.
func (s *Server) SetRegionSupported(region string, supported bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsupportedRegions[normRegion(region)] = !supported
}

// VM describes a virtual machine or scale-set instance to seed.
type VM struct {
	Location string
	// OSType is Linux or Windows.
	OSType string
	// ProxyAgentSettings is the initial proxyAgentSettings JSON; empty for
	// none.
	ProxyAgentSettings string
	// Extra is merged into properties, to check that a client preserves
	// fields it does not know.
	Extra map[string]any
}

// AddVirtualMachine seeds a VM with the given id.
func (s *Server) AddVirtualMachine(id string, vm VM) {
	props := vmProps(vm)
	s.put(id, kindVM, map[string]any{
		"id": id, "name": lastSegment(id), "type": "Microsoft.Compute/virtualMachines",
		"location": vm.Location, "properties": props,
	})
}

// ScaleSet describes a scale set to seed.
type ScaleSet struct {
	Location string
	OSType   string
	// UpgradeMode is Automatic, Manual or Rolling.
	UpgradeMode        string
	ProxyAgentSettings string
}

// AddScaleSet seeds a scale set.
func (s *Server) AddScaleSet(id string, ss ScaleSet) {
	profile := vmProps(VM{OSType: ss.OSType, ProxyAgentSettings: ss.ProxyAgentSettings})
	delete(profile, "provisioningState")
	s.put(id, kindScaleSet, map[string]any{
		"id": id, "name": lastSegment(id), "type": "Microsoft.Compute/virtualMachineScaleSets",
		"location": ss.Location,
		"properties": map[string]any{
			"provisioningState":     "Succeeded",
			"upgradePolicy":         map[string]any{"mode": ss.UpgradeMode},
			"virtualMachineProfile": profile,
		},
	})
}

// AddScaleSetInstance seeds instance instanceID of the scale set scaleSetID.
func (s *Server) AddScaleSetInstance(scaleSetID, instanceID string, vm VM) {
	props := vmProps(vm)
	props["latestModelApplied"] = true
	id := scaleSetID + "/virtualMachines/" + instanceID
	s.put(id, kindInstance, map[string]any{
		"id": id, "name": lastSegment(scaleSetID) + "_" + instanceID, "instanceId": instanceID,
		"type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines", "location": vm.Location,
		"properties": props,
	})
}

func vmProps(vm VM) map[string]any {
	props := map[string]any{
		"provisioningState": "Succeeded",
		"storageProfile":    map[string]any{"osDisk": map[string]any{"osType": vm.OSType}},
		"securityProfile":   map[string]any{},
	}
	maps.Copy(props, vm.Extra)
	if vm.ProxyAgentSettings != "" {
		var pas map[string]any
		if err := json.Unmarshal([]byte(vm.ProxyAgentSettings), &pas); err != nil {
			panic(fmt.Sprintf("armtest: ProxyAgentSettings: %v", err))
		}
		props["securityProfile"] = map[string]any{"proxyAgentSettings": pas}
	}
	return props
}

// SetResource stores a resource body as JSON under id, replacing any. The
// id's shape decides the kind; the etag is set by the server.
func (s *Server) SetResource(id string, body []byte) error {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	rt, err := parsePath(id)
	if err != nil || rt.kind == 0 || rt.action != "" {
		return fmt.Errorf("armtest: unsupported resource id %q", id)
	}
	s.put(id, rt.kind, m)
	return nil
}

func (s *Server) put(id string, k kind, body map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &resource{kind: k, body: body}
	if k == kindVM || k == kindScaleSet || k == kindInstance {
		body["etag"] = s.newETag()
	}
	s.res[strings.ToLower(id)] = r
}

// Resource returns the stored JSON of a resource.
func (s *Server) Resource(id string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res[strings.ToLower(id)]
	if !ok {
		return nil, false
	}
	b, err := json.Marshal(r.body)
	if err != nil {
		return nil, false
	}
	return b, true
}

// ProxyAgentSettings returns a resource's stored proxyAgentSettings as JSON
// (the scale-set model's for a scale set), or nil.
func (s *Server) ProxyAgentSettings(id string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res[strings.ToLower(id)]
	if !ok {
		return nil
	}
	pas := settingsOf(r)
	if pas == nil {
		return nil
	}
	b, _ := json.Marshal(pas)
	return b
}

// KeyIncarnationID returns a resource's stored keyIncarnationId (0 when
// unset).
func (s *Server) KeyIncarnationID(id string) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.res[strings.ToLower(id)]
	if !ok {
		return 0
	}
	return keyOf(settingsOf(r))
}

// SetGuestReport sets the ProxyAgent substatus message the instance view of
// a VM or instance shows: the agent's proxyAgentStatus object.
func (s *Server) SetGuestReport(id string, message map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.res[strings.ToLower(id)]; ok {
		r.guest = message
	}
}

// LatchGuest makes the simulated guest agent report the resource's current
// keyIncarnationId and modes, as if it had latched the key.
func (s *Server) LatchGuest(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.res[strings.ToLower(id)]; ok {
		r.guest = guestReport(settingsOf(r))
	}
}

func guestReport(pas map[string]any) map[string]any {
	mode := func(ep string) string {
		e, _ := pas[ep].(map[string]any)
		if m, ok := e["mode"].(string); ok {
			return m
		}
		if _, ok := e["inVMAccessControlProfileReferenceId"].(string); ok {
			return "Enforce"
		}
		return "Disabled"
	}
	channel := "disabled"
	if en, _ := pas["enabled"].(bool); en {
		channel = fmt.Sprintf("WireServer %s -  IMDS %s - HostGA %s", mode("wireServer"), mode("imds"), mode("wireServer"))
	}
	running := map[string]any{"status": "RUNNING", "message": "ok"}
	return map[string]any{
		"version": "1.0.0",
		"status":  "SUCCESS",
		"keyLatchStatus": map[string]any{
			"status":  "RUNNING",
			"message": "Successfully attest the key and ready to use.",
			"states": map[string]any{
				"secureChannelState": channel,
				"keyIncarnationId":   strconv.Itoa(int(keyOf(pas))),
				"wireServerRuleId":   "",
				"imdsRuleId":         "",
			},
		},
		"ebpfProgramStatus":   running,
		"proxyListenerStatus": running,
	}
}

func settingsOf(r *resource) map[string]any {
	props, _ := r.body["properties"].(map[string]any)
	if r.kind == kindScaleSet {
		props, _ = props["virtualMachineProfile"].(map[string]any)
	}
	sp, _ := props["securityProfile"].(map[string]any)
	pas, _ := sp["proxyAgentSettings"].(map[string]any)
	return pas
}

// keyOf returns the stored keyIncarnationId, 0 when unset. Stored bodies
// come from JSON only, so numberOf covers every form the value can take.
func keyOf(pas map[string]any) int32 {
	n, _ := numberOf(pas["keyIncarnationId"])
	return int32(n)
}

func (s *Server) newETag() string {
	s.seq++
	return fmt.Sprintf("W/\"%d\"", s.seq)
}

func lastSegment(id string) string {
	return id[strings.LastIndexByte(id, '/')+1:]
}

func normRegion(r string) string { return strings.ToLower(strings.ReplaceAll(r, " ", "")) }

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
	if rt.action == "operation" {
		s.serveOperation(w, r, rt)
		return
	}
	if e := s.failNextReq; e != nil && (e.Method == "" || e.Method == r.Method) {
		s.failNextReq = nil
		writeError(w, e)
		return
	}
	var e *ServiceError
	switch {
	case rt.list != 0 && r.Method == http.MethodGet:
		s.serveList(w, r, rt)
		return
	case rt.action == "instanceView" && r.Method == http.MethodGet:
		e = s.serveInstanceView(w, rt)
	case rt.action == "manualupgrade" && r.Method == http.MethodPost:
		e = s.serveManualUpgrade(w, rt, body)
	case rt.action == "" && r.Method == http.MethodGet:
		res, ok := s.res[rt.key]
		if !ok {
			e = notFound(r.URL.Path)
			break
		}
		writeJSON(w, http.StatusOK, res.body, nil)
	case rt.action == "" && r.Method == http.MethodPatch && (rt.kind == kindVM || rt.kind == kindScaleSet):
		e = s.servePatch(w, r, rt, body)
	case rt.action == "" && r.Method == http.MethodPut && rt.kind == kindInstance:
		e = s.serveInstancePut(w, r, rt, body)
	case rt.action == "" && r.Method == http.MethodPut && (rt.kind == kindProfile || rt.kind == kindVersion):
		e = s.serveGalleryPut(w, r, rt, body)
	case rt.action == "" && r.Method == http.MethodDelete && (rt.kind == kindProfile || rt.kind == kindVersion):
		e = s.serveGalleryDelete(w, r, rt)
	default:
		e = &ServiceError{Status: http.StatusMethodNotAllowed, Code: "MethodNotAllowed", Message: r.Method + " is not supported on this resource in the fake."}
	}
	if e != nil {
		writeError(w, e)
	}
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

// path walks nested objects; nil when any step is missing.
func path(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

func ensure(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	return m
}

func (s *Server) servePatch(w http.ResponseWriter, r *http.Request, rt route, body []byte) *ServiceError {
	res, ok := s.res[rt.key]
	if !ok {
		return notFound(r.URL.Path)
	}
	if e := checkIfMatch(r, res); e != nil {
		return e
	}
	in, e := decodeObject(body)
	if e != nil {
		return e
	}
	prefix := []string{"properties"}
	target := "securityProfile.proxyAgentSettings"
	if rt.kind == kindScaleSet {
		prefix = append(prefix, "virtualMachineProfile")
		target = "virtualMachineProfile." + target
	}
	var props map[string]any
	if p := path(in, prefix...); p != nil {
		props = p
	}
	if pasIn := path(props, "securityProfile", "proxyAgentSettings"); pasIn != nil {
		current := settingsOf(res)
		merged := mergeSettings(current, pasIn)
		if e := s.validateSettings(rt.sub, res, target, current, pasIn, merged); e != nil {
			return e
		}
		ensure(res.body, append(prefix, "securityProfile")...)["proxyAgentSettings"] = merged
	}
	if rt.kind == kindScaleSet {
		s.modelChanged(rt.key, res)
	}
	return s.accept(w, rt, res, http.StatusOK, false)
}

// modelChanged marks instances outdated, or applies the model to them when
// the upgrade policy is not Manual.
func (s *Server) modelChanged(key string, ss *resource) {
	mode, _ := path(ss.body, "properties", "upgradePolicy")["mode"].(string)
	for k, inst := range s.res {
		if inst.kind != kindInstance || !strings.HasPrefix(k, key+"/virtualmachines/") {
			continue
		}
		if strings.EqualFold(mode, "Manual") {
			ensure(inst.body, "properties")["latestModelApplied"] = false
			continue
		}
		applyModel(ss, inst)
	}
}

// applyModel copies the model's settings into an instance, keeping the
// instance's own key incarnation, which is per instance.
func applyModel(ss, inst *resource) {
	model := settingsOf(ss)
	if model == nil {
		return
	}
	merged := map[string]any{}
	for k, v := range model {
		if k != "keyIncarnationId" {
			merged[k] = v
		}
	}
	if cur := settingsOf(inst); cur != nil {
		if v, ok := cur["keyIncarnationId"]; ok {
			merged["keyIncarnationId"] = v
		}
	}
	ensure(inst.body, "properties", "securityProfile")["proxyAgentSettings"] = merged
	ensure(inst.body, "properties")["latestModelApplied"] = true
}

func (s *Server) serveManualUpgrade(w http.ResponseWriter, rt route, body []byte) *ServiceError {
	ss, ok := s.res[rt.key]
	if !ok {
		return notFound(rt.key)
	}
	in, e := decodeObject(body)
	if e != nil {
		return e
	}
	ids, _ := in["instanceIds"].([]any)
	if len(ids) == 0 {
		return badRequest("InvalidParameter", "instanceIds", "At least one instance id is required.")
	}
	var insts []*resource
	for _, id := range ids {
		sid, _ := id.(string)
		inst, ok := s.res[rt.key+"/virtualmachines/"+strings.ToLower(sid)]
		if !ok {
			return badRequest("InvalidParameter", "instanceIds", "The instance id '%s' is not part of the scale set.", sid)
		}
		insts = append(insts, inst)
	}
	for _, inst := range insts {
		applyModel(ss, inst)
	}
	return s.accept(w, rt, nil, http.StatusAccepted, false)
}

func (s *Server) serveInstancePut(w http.ResponseWriter, r *http.Request, rt route, body []byte) *ServiceError {
	res, ok := s.res[rt.key]
	if !ok {
		return notFound(r.URL.Path)
	}
	if e := checkIfMatch(r, res); e != nil {
		return e
	}
	in, e := decodeObject(body)
	if e != nil {
		return e
	}
	if loc, _ := in["location"].(string); loc == "" {
		return badRequest("InvalidParameter", "location", "The 'location' property is required for this definition.")
	}
	const target = "securityProfile.proxyAgentSettings"
	current := settingsOf(res)
	pasIn := path(in, "properties", "securityProfile", "proxyAgentSettings")
	if pasIn == nil {
		pasIn = map[string]any{}
	}
	// PUT replaces the object; nulls become absent.
	replaced := mergeSettings(nil, pasIn)
	if e := s.validateSettings(rt.sub, res, target, current, pasIn, replaced); e != nil {
		return e
	}
	// Keep server-owned fields; take the rest of the body as sent.
	for _, k := range []string{"id", "name", "type", "instanceId", "etag"} {
		if v, ok := res.body[k]; ok {
			in[k] = v
		}
	}
	ensure(in, "properties", "securityProfile")["proxyAgentSettings"] = replaced
	res.body = in
	return s.accept(w, rt, res, http.StatusOK, false)
}

// mergeSettings applies a proxyAgentSettings patch: null removes a field, an
// endpoint given a mode loses its profile reference and the other way round,
// and untouched fields stay.
func mergeSettings(current, patch map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range current {
		out[k] = v
	}
	for k, v := range patch {
		if v == nil {
			delete(out, k)
			continue
		}
		if k != "wireServer" && k != "imds" {
			out[k] = v
			continue
		}
		pe, ok := v.(map[string]any)
		if !ok {
			out[k] = v
			continue
		}
		ce, _ := out[k].(map[string]any)
		e := map[string]any{}
		for ek, ev := range ce {
			e[ek] = ev
		}
		if pe["mode"] != nil {
			delete(e, "inVMAccessControlProfileReferenceId")
		}
		if pe["inVMAccessControlProfileReferenceId"] != nil {
			delete(e, "mode")
		}
		for ek, ev := range pe {
			if ev == nil {
				delete(e, ek)
			} else {
				e[ek] = ev
			}
		}
		out[k] = e
	}
	return out
}

func numberOf(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), n == math.Trunc(n)
	}
	return 0, false
}

// validateSettings applies the service's rules to a patch (as sent) and the
// resulting settings.
func (s *Server) validateSettings(sub string, res *resource, target string, current, patch, result map[string]any) *ServiceError {
	location, _ := res.body["location"].(string)
	if en, _ := result["enabled"].(bool); en {
		if s.unregistered[strings.ToLower(sub)] {
			return &ServiceError{Status: http.StatusBadRequest, Code: "SubscriptionNotEnabledForProxyAgentFeature",
				Message: "The subscription is not registered for the ProxyAgent feature."}
		}
		if s.unsupportedRegions[normRegion(location)] {
			return &ServiceError{Status: http.StatusBadRequest, Code: "ProxyAgentNotSupportedInRegion",
				Message: fmt.Sprintf("ProxyAgent is not supported in region '%s'.", location)}
		}
	}
	if v, ok := patch["keyIncarnationId"]; ok && v != nil {
		n, ok := numberOf(v)
		if !ok || n < math.MinInt32 || n > math.MaxInt32 {
			return badRequest("InvalidParameter", target+".keyIncarnationId", "The value of %s.keyIncarnationId is not a valid int32.", target)
		}
		if cur := int64(keyOf(current)); n < cur {
			return badRequest("BadRequest", target+".keyIncarnationId",
				"The property %s.keyIncarnationId can only be incremented (current %d, requested %d).", target, cur, n)
		}
	}
	if m, ok := patch["mode"].(string); ok && m != "Audit" && m != "Enforce" {
		return badRequest("BadRequest", target+".mode", "Invalid value '%s' for %s.mode.", m, target)
	}
	osType, _ := path(res.body, "properties", "storageProfile", "osDisk")["osType"].(string)
	if res.kind == kindScaleSet {
		osType, _ = path(res.body, "properties", "virtualMachineProfile", "storageProfile", "osDisk")["osType"].(string)
	}
	for _, ep := range []string{"wireServer", "imds"} {
		pe, _ := patch[ep].(map[string]any)
		if pe == nil {
			continue
		}
		t := target + "." + ep
		if pe["mode"] != nil && pe["inVMAccessControlProfileReferenceId"] != nil {
			return badRequest("BadRequest", t,
				"%s.inVMAccessControlProfileReferenceId cannot be specified together with %s.mode.", t, t)
		}
		if m, ok := pe["mode"]; ok && m != nil {
			if ms, _ := m.(string); ms != "Audit" && ms != "Enforce" && ms != "Disabled" {
				return badRequest("BadRequest", t+".mode", "Invalid value '%v' for %s.mode. Allowed values are Audit, Enforce, Disabled.", m, t)
			}
		}
		ref, ok := pe["inVMAccessControlProfileReferenceId"]
		if !ok || ref == nil {
			continue
		}
		refs, _ := ref.(string)
		vkey, valid := versionKey(refs)
		if !valid {
			return badRequest("InvalidParameter", t+".inVMAccessControlProfileReferenceId",
				"%s.inVMAccessControlProfileReferenceId '%s' is not a valid gallery inVMAccessControlProfile version id.", t, refs)
		}
		ver, okV := s.res[vkey]
		prof, okP := s.res[vkey[:strings.LastIndex(vkey, "/versions/")]]
		if !okV || !okP || !replicated(ver, location) {
			return &ServiceError{Status: http.StatusNotFound, Code: "InVMAccessControlProfileNotFound", Target: t,
				Message: fmt.Sprintf("The inVMAccessControlProfile version '%s' was not found in region '%s'.", refs, location)}
		}
		wantEP := "WireServer"
		if ep == "imds" {
			wantEP = "IMDS"
		}
		pp := path(prof.body, "properties")
		if got, _ := pp["applicableHostEndpoint"].(string); !strings.EqualFold(got, wantEP) {
			return badRequest("GalleryInVMAccessControlProfileNotMatchHostEndpointType", t,
				"The profile applies to %s and cannot be used for %s.", got, ep)
		}
		if got, _ := pp["osType"].(string); osType != "" && !strings.EqualFold(got, osType) {
			return badRequest("GalleryInVMAccessControlProfileNotMatchOSDisk", t,
				"The profile is for %s but the OS disk is %s.", got, osType)
		}
	}
	return nil
}

func replicated(ver *resource, location string) bool {
	tl, _ := path(ver.body, "properties")["targetLocations"].([]any)
	if len(tl) == 0 {
		l, _ := ver.body["location"].(string)
		return normRegion(l) == normRegion(location)
	}
	for _, t := range tl {
		n, _ := t.(map[string]any)["name"].(string)
		if normRegion(n) == normRegion(location) {
			return true
		}
	}
	return false
}

// versionKey checks the shape of a profile version id and returns its key.
func versionKey(id string) (string, bool) {
	rt, err := parsePath(id)
	if err != nil || rt.kind != kindVersion || rt.action != "" || !strings.HasPrefix(id, "/") {
		return "", false
	}
	for _, seg := range strings.Split(strings.Trim(id, "/"), "/") {
		if seg == "" {
			return "", false
		}
	}
	return rt.key, true
}

// accept finishes a write: new etag, provisioning state, an operation and
// the LRO headers.
func (s *Server) accept(w http.ResponseWriter, rt route, res *resource, status int, isDelete bool) *ServiceError {
	op := &operation{id: fmt.Sprintf("op-%d", s.seq+1), resKey: rt.key, left: s.opts.LROPolls, delete: isDelete}
	s.seq++
	if f := s.failNextOp; f != nil {
		op.fail, s.failNextOp = f, nil
	}
	op.guest = s.opts.GuestAutoLatch && (rt.kind == kindVM || rt.kind == kindInstance) && rt.action == ""
	s.ops[op.id] = op
	h := http.Header{}
	opURL := fmt.Sprintf("%s/subscriptions/%s/providers/Microsoft.Compute/locations/%s/operations/%s?api-version=%s",
		s.URL, url.PathEscape(rt.sub), "fakeregion", op.id, "2025-04-01")
	h.Set("Azure-AsyncOperation", opURL)
	if status == http.StatusAccepted {
		h.Set("Location", opURL+"&monitor=true")
	}
	if res == nil || isDelete {
		writeJSON(w, status, nil, h)
		return nil
	}
	if res.kind == kindVM || res.kind == kindScaleSet || res.kind == kindInstance {
		res.body["etag"] = s.newETag()
	}
	state := "Updating"
	if status == http.StatusCreated {
		state = "Creating"
	}
	ensure(res.body, "properties")["provisioningState"] = state
	writeJSON(w, status, res.body, h)
	return nil
}

func (s *Server) serveOperation(w http.ResponseWriter, r *http.Request, rt route) {
	op, ok := s.ops[rt.opID]
	if !ok {
		writeError(w, notFound(r.URL.Path))
		return
	}
	monitor := r.URL.Query().Get("monitor") == "true"
	if op.left > 0 {
		op.left--
		if monitor {
			w.Header().Set("Location", r.URL.String())
			writeJSON(w, http.StatusAccepted, nil, nil)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"name": op.id, "status": "InProgress"}, nil)
		return
	}
	if !op.done {
		op.done = true
		s.finish(op)
	}
	if op.fail != nil {
		if monitor {
			writeError(w, &ServiceError{Status: http.StatusBadRequest, Code: op.fail.Code, Message: op.fail.Message})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"name": op.id, "status": "Failed",
			"error": map[string]any{"code": op.fail.Code, "message": op.fail.Message}}, nil)
		return
	}
	if monitor {
		writeJSON(w, http.StatusOK, nil, nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": op.id, "status": "Succeeded"}, nil)
}

func (s *Server) finish(op *operation) {
	res, ok := s.res[op.resKey]
	if !ok || op.delete {
		return
	}
	state := "Succeeded"
	if op.fail != nil {
		state = "Failed"
	}
	ensure(res.body, "properties")["provisioningState"] = state
	if op.guest && op.fail == nil {
		res.guest = guestReport(settingsOf(res))
	}
}

func (s *Server) serveInstanceView(w http.ResponseWriter, rt route) *ServiceError {
	res, ok := s.res[rt.key]
	if !ok {
		return notFound(rt.key)
	}
	view := map[string]any{"statuses": []any{map[string]any{"code": "ProvisioningState/succeeded"}}}
	if res.guest != nil {
		os, _ := path(res.body, "properties", "storageProfile", "osDisk")["osType"].(string)
		msg, err := json.Marshal(res.guest)
		if err != nil {
			return &ServiceError{Status: http.StatusInternalServerError, Code: "InternalError", Message: err.Error()}
		}
		view["extensions"] = []any{map[string]any{
			"name": "ProxyAgent" + os,
			"type": "Microsoft.CPlat.ProxyAgent.ProxyAgent" + os,
			"substatuses": []any{map[string]any{
				"code":    "ComponentStatus/ProxyAgentStatus/succeeded",
				"level":   "Info",
				"message": string(msg),
			}},
		}}
	}
	writeJSON(w, http.StatusOK, view, nil)
	return nil
}

func (s *Server) serveGalleryPut(w http.ResponseWriter, r *http.Request, rt route, body []byte) *ServiceError {
	in, e := decodeObject(body)
	if e != nil {
		return e
	}
	if loc, _ := in["location"].(string); loc == "" {
		return badRequest("InvalidParameter", "location", "The 'location' property is required for this definition.")
	}
	props := path(in, "properties")
	if props == nil {
		return badRequest("InvalidParameter", "properties", "The 'properties' property is required.")
	}
	typ := "Microsoft.Compute/galleries/inVMAccessControlProfiles"
	switch rt.kind {
	case kindProfile:
		if os, _ := props["osType"].(string); os != "Linux" && os != "Windows" {
			return badRequest("InvalidParameter", "properties.osType", "Invalid value '%v' for osType.", props["osType"])
		}
		if ep, _ := props["applicableHostEndpoint"].(string); ep != "WireServer" && ep != "IMDS" {
			return badRequest("InvalidParameter", "properties.applicableHostEndpoint", "Invalid value '%v' for applicableHostEndpoint.", props["applicableHostEndpoint"])
		}
		if old, ok := s.res[rt.key]; ok {
			op := path(old.body, "properties")
			if op["osType"] != props["osType"] || op["applicableHostEndpoint"] != props["applicableHostEndpoint"] {
				return badRequest("PropertyChangeNotAllowed", "properties", "osType and applicableHostEndpoint cannot be changed.")
			}
		}
	case kindVersion:
		typ += "/versions"
		if _, ok := s.res[rt.parent]; !ok {
			return &ServiceError{Status: http.StatusNotFound, Code: "ParentResourceNotFound", Message: "The parent inVMAccessControlProfile was not found."}
		}
		if m, _ := props["mode"].(string); m != "Audit" && m != "Enforce" && m != "Disabled" {
			return badRequest("InvalidParameter", "properties.mode", "Invalid value '%v' for mode.", props["mode"])
		}
		if a, _ := props["defaultAccess"].(string); a != "Allow" && a != "Deny" {
			return badRequest("InvalidParameter", "properties.defaultAccess", "Invalid value '%v' for defaultAccess.", props["defaultAccess"])
		}
		if rules, ok := props["rules"]; ok && rules != nil {
			rm, _ := rules.(map[string]any)
			for _, k := range []string{"privileges", "roles", "identities", "roleAssignments"} {
				if _, ok := rm[k].([]any); !ok {
					return badRequest("InvalidParameter", "properties.rules."+k, "All of privileges, roles, identities and roleAssignments are required when rules are given.")
				}
			}
		}
		props["publishedDate"] = time.Now().UTC().Format(time.RFC3339)
		props["replicationStatus"] = map[string]any{"aggregatedState": "Completed"}
	}
	status := http.StatusOK
	if _, exists := s.res[rt.key]; !exists {
		status = http.StatusCreated
	}
	in["id"] = r.URL.Path
	in["name"] = lastSegment(r.URL.Path)
	in["type"] = typ
	res := &resource{kind: rt.kind, body: in}
	s.res[rt.key] = res
	return s.accept(w, rt, res, status, false)
}

func (s *Server) serveGalleryDelete(w http.ResponseWriter, r *http.Request, rt route) *ServiceError {
	if _, ok := s.res[rt.key]; !ok {
		writeJSON(w, http.StatusNoContent, nil, nil)
		return nil
	}
	if rt.kind == kindProfile {
		for k, v := range s.res {
			if v.kind == kindVersion && strings.HasPrefix(k, rt.key+"/versions/") {
				return &ServiceError{Status: http.StatusConflict, Code: "CannotDeleteResource",
					Message: "The inVMAccessControlProfile has versions; delete them first."}
			}
		}
	}
	delete(s.res, rt.key)
	return s.accept(w, rt, nil, http.StatusAccepted, true)
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, rt route) {
	child := "/inVMAccessControlProfiles/"
	switch rt.list {
	case kindVersion:
		child = "/versions/"
	case kindInstance:
		child = "/virtualMachines/"
	}
	prefix := rt.parent + strings.ToLower(child)
	var keys []string
	for k, v := range s.res {
		if v.kind == rt.list && strings.HasPrefix(k, prefix) && !strings.Contains(k[len(prefix):], "/") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	start := 0
	if tok := r.URL.Query().Get("$skiptoken"); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(keys) {
			writeError(w, badRequest("InvalidParameter", "$skiptoken", "Invalid skip token."))
			return
		}
		start = n
	}
	end := min(start+s.opts.PageSize, len(keys))
	value := []any{}
	for _, k := range keys[start:end] {
		value = append(value, s.res[k].body)
	}
	page := map[string]any{"value": value}
	if end < len(keys) {
		q := r.URL.Query()
		q.Set("$skiptoken", strconv.Itoa(end))
		page["nextLink"] = s.URL + r.URL.Path + "?" + q.Encode()
	}
	writeJSON(w, http.StatusOK, page, nil)
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
