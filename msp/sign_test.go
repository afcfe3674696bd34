package msp

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const vectorKeyHex = "4A404E635266556A586E3272357538782F413F4428472B4B6250645367566B59"

func vectorKey(t testing.TB) Key {
	t.Helper()
	k, err := NewKey("a8016240-7286-49ef-8981-63520cb8f6d0", vectorKeyHex)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestComputeHMACVector(t *testing.T) {
	got, err := ComputeHMAC(vectorKey(t), []byte("Hello world"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "a15b46f621193876a6d3121b836dc2af4180e2786642e55235ef916fc5b082a3"; got != want {
		t.Errorf("HMAC = %s, want %s", got, want)
	}
}

func TestNewKeyInvalidHex(t *testing.T) {
	bad := "Y" + vectorKeyHex[1:]
	_, err := NewKey("g", bad)
	if !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("err = %v, want ErrInvalidKey", err)
	}
	// Unlike upstream, the error must not echo the key material.
	if strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), vectorKeyHex[1:20]) {
		t.Errorf("error leaks key material: %v", err)
	}
}

func TestCanonicalSigningQueryVector(t *testing.T) {
	path, query := CanonicalSigningQuery("/machine/a8016240-7286-49ef-8981-63520cb8f6d0/49c242ba%2Dc18a%2D4f6c%2D8cf8%2D85ff790b6431.%5Fzpeng%2Debpf%2Dvm2?comp=config&keyOnly&comp=again&type=hostingEnvironmentConfig&incarnation=1&resource=https%3a%2f%2fstorage.azure.com%2f")
	if want := "/machine/a8016240-7286-49ef-8981-63520cb8f6d0/49c242ba%2Dc18a%2D4f6c%2D8cf8%2D85ff790b6431.%5Fzpeng%2Debpf%2Dvm2"; path != want {
		t.Errorf("path = %q, want %q", path, want)
	}
	if want := "comp=again&comp=config&incarnation=1&keyonly&resource=https%3a%2f%2fstorage.azure.com%2f&type=hostingEnvironmentConfig"; query != want {
		t.Errorf("query = %q, want %q", query, want)
	}
}

func hdrs(kv ...string) []HeaderField {
	var h []HeaderField
	for i := 0; i < len(kv); i += 2 {
		h = append(h, HeaderField{kv[i], kv[i+1]})
	}
	return h
}

const vectorDate = "Wed, 23 Apr 2025 12:00:00 GMT"

var signVectors = []struct {
	name      string
	msg       Message
	wantInput string
	wantSig   string
}{
	{
		name: "goalstate",
		msg: Message{Method: "GET", RawURI: "/machine?comp=goalstate", Header: hdrs(
			"x-ms-azure-host-date", vectorDate, "host", "168.63.129.16",
			"x-ms-azure-host-claims", `{ "isRoot": "true"}`, "content-length", "0", "x-ms-version", "2012-11-30")},
		wantInput: "GET\n\ncontent-length:0\nhost:168.63.129.16\nx-ms-azure-host-claims:{ \"isRoot\": \"true\"}\nx-ms-azure-host-date:Wed, 23 Apr 2025 12:00:00 GMT\nx-ms-version:2012-11-30\n/machine\ncomp=goalstate",
		wantSig:   "35d027d96fb783dcbd427dfbd3a0b81fb463cdd5cd43542e5f5dcb5db9786537",
	},
	{
		name: "imds proxied",
		msg: Message{Method: "GET", RawURI: "/metadata/instance?api-version=2021-02-01", Header: hdrs(
			"host", "169.254.169.254", "user-agent", "curl/8.5.0", "accept", "*/*", "metadata", "true",
			"x-ms-azure-host-claims", `{ "isRoot": "false"}`, "x-ms-azure-host-date", vectorDate)},
		wantInput: "GET\n\naccept:*/*\nhost:169.254.169.254\nmetadata:true\nuser-agent:curl/8.5.0\nx-ms-azure-host-claims:{ \"isRoot\": \"false\"}\nx-ms-azure-host-date:Wed, 23 Apr 2025 12:00:00 GMT\n/metadata/instance\napi-version=2021-02-01",
		wantSig:   "75afe2e9a612e6be0caaac7d967c639ab0b1141a193212de74ab4cce3657a6a6",
	},
	{
		name: "post with body",
		msg: Message{Method: "POST", RawURI: "/machine?comp=health", Body: []byte("hello"), Header: hdrs(
			"host", "168.63.129.16", "content-type", "text/xml", "content-length", "5",
			"x-ms-azure-host-claims", `{ "isRoot": "true"}`, "x-ms-azure-host-date", vectorDate)},
		wantInput: "POST\nhello\ncontent-length:5\ncontent-type:text/xml\nhost:168.63.129.16\nx-ms-azure-host-claims:{ \"isRoot\": \"true\"}\nx-ms-azure-host-date:Wed, 23 Apr 2025 12:00:00 GMT\n/machine\ncomp=health",
		wantSig:   "66f814af6f6430e7e7fd61d26b8d759354077a1a72152e225b311fd2a53c9b74",
	},
	{
		name: "edge cases",
		msg: Message{Method: "GET", RawURI: "/a/B%2Fc?b=2&A=1&a=0&x&aa=&ab=", Header: hdrs(
			"Host", "h", "X-Dup", "one", "x-dup", " two ", "x-ms-azure-host-authorization", "Azure-HMAC-SHA256 g s")},
		wantInput: "GET\n\nhost:h\nx-dup:two\n/a/B%2Fc\na=0&a=1&aa&ab&b=2&x",
		wantSig:   "ee0752e48e1b42238a8c21103e58734a996ddcd1823aca8e03bacf45da4b779b",
	},
}

func TestStringToSignVectors(t *testing.T) {
	k := vectorKey(t)
	s, err := NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range signVectors {
		t.Run(v.name, func(t *testing.T) {
			got, err := StringToSign(&v.msg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(v.wantInput, got); diff != "" {
				t.Errorf("string to sign (-want +got):\n%s", diff)
			}
			sig, err := ComputeHMAC(k, []byte(got))
			if err != nil {
				t.Fatal(err)
			}
			if sig != v.wantSig {
				t.Errorf("HMAC = %s, want %s", sig, v.wantSig)
			}
			authz, err := s.Sign(&v.msg)
			if err != nil {
				t.Fatal(err)
			}
			if want := "Azure-HMAC-SHA256 " + k.GUID + " " + v.wantSig; authz != want {
				t.Errorf("Sign = %q, want %q", authz, want)
			}
		})
	}
}
