package msptest

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// statusJSON is the secure-channel status body (docs/protocol.md §2.3). Pointer
// fields are written as null when nil, as the host does, and the v1/v2-only
// fields are left out of the other version.
type statusJSON struct {
	AuthorizationRules        *rulesJSON `json:"authorizationRules,omitempty"`
	AuthorizationScheme       string     `json:"authorizationScheme"`
	KeyDeliveryMethod         string     `json:"keyDeliveryMethod"`
	KeyGUID                   *string    `json:"keyGuid"`
	KeyIncarnationID          *uint32    `json:"keyIncarnationId,omitempty"`
	RequiredClaimsHeaderPairs []string   `json:"requiredClaimsHeaderPairs"`
	SecureChannelEnabled      *bool      `json:"secureChannelEnabled,omitempty"`
	SecureChannelState        *string    `json:"secureChannelState,omitempty"`
	Version                   string     `json:"version"`
}

type rulesJSON struct {
	IMDS       *msp.AuthorizationItem `json:"imds"`
	WireServer *msp.AuthorizationItem `json:"wireserver"`
	HostGA     *msp.AuthorizationItem `json:"hostga"`
}

// StatusJSON returns the body the next GET /secure-channel/status would get,
// so a test can compare it or feed it to a parser directly.
func (h *Host) StatusJSON() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.statusLocked()
}

func (h *Host) statusLocked() []byte {
	st := statusJSON{
		AuthorizationScheme:       msp.AuthScheme,
		KeyDeliveryMethod:         "http",
		RequiredClaimsHeaderPairs: []string{"isRoot"},
		Version:                   h.version,
	}
	if h.latched != nil {
		g := h.latched.GUID
		st.KeyGUID = &g
	}
	inc := h.incarnation
	st.KeyIncarnationID = &inc
	if h.version == "1.0" {
		s := h.v1State
		st.SecureChannelState = &s
		st.KeyIncarnationID = nil
	} else {
		on := h.enabled
		st.SecureChannelEnabled = &on
		if on {
			st.AuthorizationRules = &rulesJSON{
				IMDS:       h.rules[msp.EndpointIMDS],
				WireServer: h.rules[msp.EndpointWireServer],
				HostGA:     h.rules[msp.EndpointHostGA],
			}
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		// Only a mode or default access out of range can fail; a test put
		// it there on purpose, so send what a broken host would.
		return []byte(`{"error":"msptest: cannot encode status"}`)
	}
	return b
}

// secureChannel serves /secure-channel/*: status, key and attestation.
func (h *Host) secureChannel(req *wireRequest, rec *Request) *response {
	path := req.path()
	switch {
	case path == "/secure-channel/status":
		if req.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		h.mu.Lock()
		body := h.statusLocked()
		h.mu.Unlock()
		return jsonResponse(http.StatusOK, string(body))

	case path == "/secure-channel/key":
		if req.Method != http.MethodPost {
			return methodNotAllowed(http.MethodPost)
		}
		var in struct {
			AuthorizationScheme string `json:"authorizationScheme"`
		}
		if err := json.Unmarshal(req.body, &in); err != nil || in.AuthorizationScheme != msp.AuthScheme {
			return jsonResponse(http.StatusBadRequest, `{"error":"authorizationScheme must be Azure-HMAC-SHA256"}`)
		}
		h.mu.Lock()
		k, err := h.issueKeyLocked()
		h.mu.Unlock()
		if err != nil {
			return jsonResponse(http.StatusInternalServerError, `{"error":"cannot issue key"}`)
		}
		body, err := msp.MarshalKeyFile(k)
		if err != nil {
			return jsonResponse(http.StatusInternalServerError, `{"error":"cannot encode key"}`)
		}
		rec.KeyGUID = k.GUID
		return newResponse(http.StatusOK, "application/json; charset=utf-8", body)

	case strings.HasPrefix(path, "/secure-channel/key/") && strings.HasSuffix(path, "/key-attestation"):
		if req.Method != http.MethodPost {
			return methodNotAllowed(http.MethodPost)
		}
		guid := strings.TrimSuffix(strings.TrimPrefix(path, "/secure-channel/key/"), "/key-attestation")
		if !rec.SignatureValid || rec.KeyGUID != guid {
			return jsonResponse(http.StatusUnauthorized, `{"error":"attestation must be signed with the key it names"}`)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		k, ok := h.lookupLocked(guid)
		if !ok {
			return jsonResponse(http.StatusNotFound, `{"error":"unknown key"}`)
		}
		h.latched = &k
		return newResponse(http.StatusOK, "", nil)
	}
	return jsonResponse(http.StatusNotFound, `{"error":"not found"}`)
}

func methodNotAllowed(allow string) *response {
	r := newResponse(http.StatusMethodNotAllowed, "text/plain; charset=utf-8", []byte("Method Not Allowed\n"))
	r.header.Set("Allow", allow)
	return r
}

// builtin answers the ordinary paths an agent and the tests use. Anything
// else is 404, as the real host answers unknown paths.
func builtin(ep msp.Endpoint, req *wireRequest) *response {
	path := req.path()
	switch ep {
	case msp.EndpointWireServer:
		switch {
		case path == "/machine" || path == "/machine/":
			comp := queryValue(req.URI, "comp")
			switch {
			case strings.EqualFold(comp, "goalstate") && req.Method == http.MethodGet:
				return newResponse(http.StatusOK, "text/xml; charset=utf-8", []byte(goalStateXML))
			case strings.EqualFold(comp, "telemetrydata") && req.Method == http.MethodPost:
				return newResponse(http.StatusOK, "", nil)
			case req.Method == http.MethodPost:
				return newResponse(http.StatusOK, "", nil)
			}
		case path == "/" && req.Method == http.MethodGet:
			return newResponse(http.StatusOK, "text/xml; charset=utf-8", []byte(versionsXML))
		}
	case msp.EndpointHostGA:
		switch {
		case path == "/health" && req.Method == http.MethodGet:
			return newResponse(http.StatusOK, "", nil)
		case strings.EqualFold(path, "/vmAgentLog") && req.Method == http.MethodPut:
			return newResponse(http.StatusOK, "", nil)
		case path == "/status" && req.Method == http.MethodPut:
			return newResponse(http.StatusOK, "", nil)
		}
	case msp.EndpointIMDS:
		switch path {
		case "/metadata/instance":
			return jsonResponse(http.StatusOK, instanceJSON)
		case "/metadata/versions":
			return jsonResponse(http.StatusOK, `{"apiVersions":["2018-02-01","2020-06-01","2021-02-01"]}`)
		case "/metadata/identity/oauth2/token":
			return jsonResponse(http.StatusOK, tokenJSON)
		}
	}
	return newResponse(http.StatusNotFound, "text/plain; charset=utf-8", []byte("not found\n"))
}

// queryValue returns the raw value of the first query parameter named name.
func queryValue(rawURI, name string) string {
	_, q, _ := strings.Cut(rawURI, "?")
	for q != "" {
		var piece string
		piece, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(piece, "=")
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// Canned bodies: small, obviously fake, and shaped like the real ones so a
// client that parses them has something realistic to chew on.
const (
	goalStateXML = `<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <Version>2015-04-05</Version>
  <Incarnation>1</Incarnation>
  <Machine><ExpectedState>Started</ExpectedState></Machine>
  <Container>
    <ContainerId>00000000-0000-0000-0000-00000000c0de</ContainerId>
    <RoleInstanceList><RoleInstance><InstanceId>msptest-instance</InstanceId><State>Started</State></RoleInstance></RoleInstanceList>
  </Container>
</GoalState>
`
	versionsXML = `<?xml version="1.0" encoding="utf-8"?>
<Versions><Preferred><Version>2015-04-05</Version></Preferred><Supported><Version>2015-04-05</Version><Version>2012-11-30</Version></Supported></Versions>
`
	instanceJSON = `{"compute":{"azEnvironment":"AzurePublicCloud","location":"msptestregion","name":"msptest-vm","osType":"Linux","resourceGroupName":"msptest-rg","subscriptionId":"00000000-0000-0000-0000-000000000000","vmId":"00000000-0000-0000-0000-0000000000aa","vmSize":"Standard_D2s_v5"},"network":{"interface":[]}}`
	tokenJSON    = `{"access_token":"msptest-fake-token","expires_in":"3599","expires_on":"0","resource":"https://management.azure.com/","token_type":"Bearer"}`
)
