package armtest

import (
	"fmt"
	"math"
	"net/http"
	"strings"
)

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

// validateSettings applies the service's rules to a patch (as sent) and the
// resulting settings.
func (s *Server) validateSettings(sub string, res *resource, target string, current, patch, result map[string]any) *ServiceError {
	location, _ := res.body["location"].(string)
	if en, _ := result["enabled"].(bool); en {
		if s.unregistered[strings.ToLower(sub)] {
			return &ServiceError{Status: http.StatusBadRequest, Code: "SubscriptionNotEnabledForProxyAgentFeature",
				Message: "The subscription is not registered for the private preview of ProxyAgent feature."}
		}
		if s.unsupportedRegions[normRegion(location)] {
			return &ServiceError{Status: http.StatusBadRequest, Code: "ProxyAgentNotSupportedInRegion",
				Message: "Creation of VMs or Virtual Machine Scale Sets with ProxyAgent feature isn't supported in this region."}
		}
	}
	if v, ok := patch["keyIncarnationId"]; ok && v != nil {
		n, ok := numberOf(v)
		if !ok || n < math.MinInt32 || n > math.MaxInt32 {
			return badRequest("InvalidParameter", target+".keyIncarnationId", "The value of %s.keyIncarnationId is not a valid int32.", target)
		}
		if cur := int64(keyOf(current)); n < cur {
			return badRequest("BadRequest", target+".keyIncarnationId",
				"The value %s.keyIncarnationId can only be incremented.", target)
		}
	}
	if m, ok := patch["mode"].(string); ok && m != "Audit" && m != "Enforce" {
		return badRequest("BadRequest", target+".mode", "The value of parameter %s.mode is invalid.", target)
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
				"The property %s.inVMAccessControlProfileReferenceId can't be used together with property %s.mode.", t, t)
		}
		if m, ok := pe["mode"]; ok && m != nil {
			if ms, _ := m.(string); ms != "Audit" && ms != "Enforce" && ms != "Disabled" {
				return badRequest("BadRequest", t+".mode", "The value of parameter %s.mode is invalid.", t)
			}
		}
		ref, ok := pe["inVMAccessControlProfileReferenceId"]
		if !ok || ref == nil {
			continue
		}
		refs, _ := ref.(string)
		vkey, valid := versionKey(refs)
		if !valid {
			// The service names no target here (troubleshooting guide).
			return badRequest("InvalidParameter", "",
				"The resource id '%s' isn't a valid gallery inVMAccessControlProfile reference. A gallery inVMAccessControlProfile reference should be a valid resource identifier, of the format: '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/galleries/{galleryName}/inVMAccessControlProfiles/{profileName}/versions/{version}'.", refs)
		}
		ver, okV := s.res[vkey]
		prof, okP := s.res[vkey[:strings.LastIndex(vkey, "/versions/")]]
		if !okV || !okP || !replicated(ver, location) {
			return &ServiceError{Status: http.StatusNotFound, Code: "InVMAccessControlProfileNotFound", Target: t,
				Message: fmt.Sprintf("The gallery InVMAccessControlProfile '%s' isn't available. Verify that the InVMAccessControlProfileReferenceId passed in is correct.", refs)}
		}
		wantEP := "WireServer"
		if ep == "imds" {
			wantEP = "IMDS"
		}
		pp := path(prof.body, "properties")
		if got, _ := pp["applicableHostEndpoint"].(string); !strings.EqualFold(got, wantEP) {
			// The guide lists this row under BadRequest as well as under its
			// own code; the fake answers with the generic one, so that
			// clients must recognise the message.
			return badRequest("BadRequest", "",
				"Current Gallery InVMAccessControlProfile Version %s is for host endpoint %s, while current referred by %s.", refs, got, wantEP)
		}
		if got, _ := pp["osType"].(string); osType != "" && !strings.EqualFold(got, osType) {
			return badRequest("GalleryInVMAccessControlProfileNotMatchOSDisk", t,
				"Current Gallery InVMAccessControlProfile Version %s supports OS %s, while current OSDisk's OS is %s.", refs, got, osType)
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
