package keylatch

import (
	"bytes"
	"testing"

	"github.com/metadatasec/gpa/msp"
)

func FuzzParseKeyStatus(f *testing.F) {
	f.Add([]byte(`{"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"requiredClaimsHeaderPairs":null,"secureChannelState":"Wireserver","version":"1.0"}`))
	f.Add([]byte(`{"authorizationRules":null,"authorizationScheme":"Azure-HMAC-SHA256","keyDeliveryMethod":"http","keyGuid":null,"keyIncarnationId":null,"requiredClaimsHeaderPairs":[],"secureChannelEnabled":false,"version":"2.0"}`))
	f.Add([]byte(`{"authorizationScheme":"a","keyDeliveryMethod":"http","secureChannelEnabled":true,"version":"2.0","authorizationRules":{"imds":{"defaultAccess":"allow","mode":"enforce","id":"i","rules":{"privileges":[{"name":"p","path":"/x","queryParameters":{"a":"b"}}],"roles":[],"identities":[],"roleAssignments":[]}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseKeyStatus(data)
		if err != nil {
			if st != nil {
				t.Fatal("error with a status")
			}
			return
		}
		// A status that parsed is valid and yields a well-formed state.
		if err := st.Validate(); err != nil {
			t.Fatalf("parsed status does not validate: %v", err)
		}
		s := st.StateString()
		if s == "" || s == msp.SecureChannelUnknown {
			t.Fatalf("state %q from a valid status", s)
		}
		if st.Mode(msp.EndpointHostGA) != st.Mode(msp.EndpointWireServer) {
			t.Fatal("HostGA does not follow WireServer")
		}
		_ = st.String()
	})
}

func FuzzParseKeyStatusXML(f *testing.F) {
	f.Add([]byte(`<K><authorizationScheme>a</authorizationScheme><keyDeliveryMethod>http</keyDeliveryMethod><secureChannelEnabled>true</secureChannelEnabled><version>2.0</version></K>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseKeyStatusXML(data)
		if err == nil {
			if err := st.Validate(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzParseKeyJSON fuzzes the key file parser the store relies on: a key it
// accepts must survive the store's encoding unchanged, and errors must
// never quote the input (which may hold a secret).
func FuzzParseKeyJSON(f *testing.F) {
	f.Add([]byte(`{"authorizationScheme":"Azure-HMAC-SHA256","incarnationId":1,"guid":"9cf81e97-0316-4a3c-a4e1-48d7a5c4e0f5","issued":"2021-05-05T 12:00:00Z","key":"4A404E635266556A586E3272357538782F413F4428472B4B6250645367566B59"}`))
	f.Add([]byte(`{"authorizationScheme":"x","guid":"g","issued":"","key":"00112233445566778899aabbccddeeff"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := msp.ParseKeyJSON(data)
		if err != nil {
			if len(data) >= 32 && bytes.Contains([]byte(err.Error()), data) {
				t.Fatal("error quotes the input")
			}
			return
		}
		if !k.Valid() {
			t.Fatal("parsed key is not valid")
		}
		b, err := msp.MarshalKeyFile(k)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := msp.ParseKeyJSON(b)
		if err != nil || !k2.Equal(k) || k2.Issued != k.Issued {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseLocalRules(f *testing.F) {
	f.Add([]byte(localAllowInstance))
	f.Add([]byte(`{"defaultAccess":"deny"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		lr, err := msp.ParseLocalRules(data)
		if err != nil {
			return
		}
		remote := &msp.AuthorizationItem{Mode: msp.ModeEnforce, ID: "r", Rules: &msp.AccessControlRules{Privileges: []msp.Privilege{}}}
		merged := MergeLocalRules(remote, "r", lr)
		if merged.Mode != msp.ModeEnforce {
			t.Fatal("the local file changed the mode")
		}
		if merged.Rules == nil {
			return
		}
		for _, p := range merged.Rules.Privileges {
			if len(p.Name) < len(LocalRulesPrefix) || p.Name[:len(LocalRulesPrefix)] != LocalRulesPrefix {
				t.Fatalf("local privilege %q lacks the prefix", p.Name)
			}
		}
	})
}
