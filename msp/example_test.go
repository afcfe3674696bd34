package msp_test

import (
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// Sign a request exactly as it goes on the wire: every header line, Host
// included, after the claims and date headers were added.
func ExampleSigner_Sign() {
	key, err := msp.NewKey("a8016240-7286-49ef-8981-63520cb8f6d0", "4A404E635266556A586E3272357538782F413F4428472B4B6250645367566B59")
	if err != nil {
		log.Fatal(err)
	}
	signer, err := msp.NewSigner(key)
	if err != nil {
		log.Fatal(err)
	}
	req := &msp.Message{
		Method: "GET",
		RawURI: "/machine?comp=goalstate",
		Header: []msp.HeaderField{
			{Name: "x-ms-azure-host-date", Value: "Wed, 23 Apr 2025 12:00:00 GMT"},
			{Name: "host", Value: "168.63.129.16"},
			{Name: msp.HeaderClaims, Value: msp.ClaimsHeaderValue(true)},
			{Name: "content-length", Value: "0"},
			{Name: "x-ms-version", Value: "2012-11-30"},
		},
	}
	authz, err := signer.Sign(req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msp.HeaderAuthorization + ": " + authz)
	fmt.Println(key) // the secret never prints
	// Output:
	// x-ms-azure-host-authorization: Azure-HMAC-SHA256 a8016240-7286-49ef-8981-63520cb8f6d0 35d027d96fb783dcbd427dfbd3a0b81fb463cdd5cd43542e5f5dcb5db9786537
	// key a8016240-7286-49ef-8981-63520cb8f6d0
}

// Check requests' signatures as the host does, with a Verifier that keeps
// each key's HMAC state from one request to the next. Anything changed
// after signing, here the query, fails with ErrSignatureMismatch.
func ExampleVerifier_Verify() {
	key, err := msp.NewKey("a8016240-7286-49ef-8981-63520cb8f6d0", strings.Repeat("5a", 32))
	if err != nil {
		log.Fatal(err)
	}
	verifier := msp.NewVerifier(func(guid string) (msp.Key, bool) { return key, guid == key.GUID })

	signer, err := msp.NewSigner(key)
	if err != nil {
		log.Fatal(err)
	}
	req := &msp.Message{Method: "GET", RawURI: "/metadata/instance?api-version=2021-02-01",
		Header: []msp.HeaderField{{Name: "Host", Value: "169.254.169.254"}, {Name: "Metadata", Value: "true"}}}
	authz, err := signer.Sign(req)
	if err != nil {
		log.Fatal(err)
	}
	req.Set(msp.HeaderAuthorization, authz)

	k, err := verifier.Verify(req)
	fmt.Println(k.GUID, err)
	req.RawURI = "/metadata/instance?api-version=2021-02-01&extra=1"
	_, err = verifier.Verify(req)
	fmt.Println(errors.Is(err, msp.ErrSignatureMismatch))
	// Output:
	// a8016240-7286-49ef-8981-63520cb8f6d0 <nil>
	// true
}

// Evaluate requests against an IMDS rule set that lets only curl fetch a
// management token.
func ExampleEvaluator_Evaluate() {
	item, err := msp.ParseAuthorizationItem([]byte(`{
	  "mode": "Enforce", "defaultAccess": "Deny", "id": "imds-rules",
	  "rules": {
	    "privileges": [{"name": "mgmt-token", "path": "/metadata/identity/oauth2/token",
	                    "queryParameters": {"resource": "https://management.azure.com/"}}],
	    "roles": [{"name": "token-reader", "privileges": ["mgmt-token"]}],
	    "identities": [{"name": "curl", "exePath": "/usr/bin/curl"}],
	    "roleAssignments": [{"role": "token-reader", "identities": ["curl"]}]
	  }}`))
	if err != nil {
		log.Fatal(err)
	}
	ev, err := msp.Compile(msp.EndpointIMDS, item, nil)
	if err != nil {
		log.Fatal(err)
	}
	curl := &msp.Claims{UserName: "root", ProcessFullPath: "/usr/bin/curl", ProcessName: "curl", RunAsElevated: true}
	python := &msp.Claims{UserName: "alice", ProcessFullPath: "/usr/bin/python3", ProcessName: "python3"}
	for _, r := range []struct {
		who string
		req msp.Request
	}{
		{"curl", msp.Request{Method: "GET", RawURI: "/metadata/identity/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F", Claims: curl}},
		{"python", msp.Request{Method: "GET", RawURI: "/metadata/identity/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F", Claims: python}},
		{"curl", msp.Request{Method: "GET", RawURI: "/metadata/instance", Claims: curl}},
		{"curl", msp.Request{Method: "GET", RawURI: "/metadata/identity/oauth2/token/../../instance", Claims: curl}},
		{"curl", msp.Request{Method: "GET", RawURI: "/metadata/identity%3Fresource=x", Claims: curl}},
	} {
		d := ev.Evaluate(&r.req)
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%-6s %-5s %-22s %s%s", r.who, d.Verdict, d.Reason, d.Privilege, d.CanonError)))
	}
	// Output:
	// curl   allow identity-matched       mgmt-token
	// python deny  no-identity-matched    mgmt-token
	// curl   deny  default
	// curl   deny  default
	// curl   deny  canonicalisation-error CANON_EMBQ
}
