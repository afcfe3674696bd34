package armtest

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

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

func (s *Server) serveGalleryDelete(w http.ResponseWriter, _ *http.Request, rt route, _ []byte) *ServiceError {
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

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, rt route, _ []byte) *ServiceError {
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
			return badRequest("InvalidParameter", "$skiptoken", "Invalid skip token.")
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
	return nil
}
