package armtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
)

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
