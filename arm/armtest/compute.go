package armtest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// updateTarget finds the resource an update names, checks If-Match and
// decodes the body.
func (s *Server) updateTarget(r *http.Request, rt route, body []byte) (*resource, map[string]any, *ServiceError) {
	res, ok := s.res[rt.key]
	if !ok {
		return nil, nil, notFound(r.URL.Path)
	}
	if e := checkIfMatch(r, res); e != nil {
		return nil, nil, e
	}
	in, e := decodeObject(body)
	if e != nil {
		return nil, nil, e
	}
	return res, in, nil
}

func (s *Server) servePatch(w http.ResponseWriter, r *http.Request, rt route, body []byte) *ServiceError {
	res, in, e := s.updateTarget(r, rt, body)
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

func (s *Server) serveManualUpgrade(w http.ResponseWriter, _ *http.Request, rt route, body []byte) *ServiceError {
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
	res, in, e := s.updateTarget(r, rt, body)
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
func (s *Server) serveInstanceView(w http.ResponseWriter, _ *http.Request, rt route, _ []byte) *ServiceError {
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
