package msp

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCanonicalizePathVectors(t *testing.T) {
	mi := []string{"", "metadata", "identity"}
	tests := []struct {
		in       string
		segs     []string
		str      string
		trailing bool
		err      *CanonError
	}{
		{in: "/", segs: []string{""}},
		{in: "", segs: []string{""}},
		{in: "/metadata/identity", segs: mi},
		{in: "/Metadata/Identity", segs: mi},
		{in: "/metadata//identity", segs: mi},
		{in: "/metadata/./identity", segs: mi},
		{in: "/metadata/x/../identity", segs: mi},
		{in: "/metadata%2Fidentity", segs: mi},
		{in: "/metadata%2fidentity", segs: mi},
		{in: "/metadata/identity;jsessionid=abc", segs: mi},
		{in: "/metadata;a=1;b=2/identity;c=3", segs: mi},
		{in: "/a/b/c/../../identity", segs: []string{"", "a", "identity"}},
		{in: "/metadata%252Fidentity", segs: []string{"", "metadata%2fidentity"}},
		{in: "/a/;jsessionid=x/b", segs: []string{"", "a", "b"}},
		{in: "/metadata/", segs: []string{"", "metadata"}, trailing: true},
		{in: "/a%3Bb", str: "/a"},
		{in: "/metadata/%252e%252e/identity", str: "/metadata/%2e%2e/identity"},
		{in: "/a/b/./c/../d;p=q/e", str: "/a/b/d/e"},
		{in: "///metadata", str: "/metadata"},
		{in: "/./a/./b/./", str: "/a/b", trailing: true},
		{in: "/Foo%2FBar;p=q", str: "/foo/bar"},
		{in: "/foo%20bar", str: "/foo bar"},
		{in: "/abc%", err: ErrCanonPct},
		{in: "/abc%2", err: ErrCanonPct},
		{in: "/abc%ZZ", err: ErrCanonPct},
		{in: "/abc%2G", err: ErrCanonPct},
		{in: "/x%00", err: ErrCanonCtrl},
		{in: "/x%09", err: ErrCanonCtrl},
		{in: "/x%0A", err: ErrCanonCtrl},
		{in: "/x%0D", err: ErrCanonCtrl},
		{in: "/x%7F", err: ErrCanonCtrl},
		{in: "/x%E4%B8%AD", err: ErrCanonNonASCII},
		{in: "/caf%C3%A9", err: ErrCanonNonASCII},
		{in: "/metadata/identity%3Fapi-version=2018", err: ErrCanonEmbQ},
		{in: "/x%3Fy", err: ErrCanonEmbQ},
		{in: "/x%3fy", err: ErrCanonEmbQ},
		{in: "/a/../..", err: ErrCanonUnderflw},
		{in: "/..", err: ErrCanonUnderflw},
		{in: "/a/b/../../../c", err: ErrCanonUnderflw},
		{in: "/metadata/identity/../../..", err: ErrCanonUnderflw},
		{in: "/x%C0%AFy", err: ErrCanonOverlong},
		{in: "/x%E0%80%AFy", err: ErrCanonOverlong},
		{in: "/x%F0%80%80%AFy", err: ErrCanonOverlong},
		{in: "/x%FFy", err: ErrCanonUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CanonicalizePath(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %s", err, tt.err.Code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.segs != nil {
				if diff := cmp.Diff(tt.segs, got.Segments); diff != "" {
					t.Errorf("segments (-want +got):\n%s", diff)
				}
			}
			if tt.str != "" {
				s := got.String()
				if got.TrailingSlash {
					s = s[:len(s)-1]
				}
				if s != tt.str {
					t.Errorf("path = %q, want %q", s, tt.str)
				}
			}
			if got.TrailingSlash != tt.trailing {
				t.Errorf("trailing = %v, want %v", got.TrailingSlash, tt.trailing)
			}
		})
	}
}

func TestCanonicalizeQueryVectors(t *testing.T) {
	tests := []struct {
		in   string
		want CanonicalQuery
		err  *CanonError
	}{
		{in: "API-Version=2018", want: CanonicalQuery{"api-version": {"2018"}}},
		{in: "k=a+b", want: CanonicalQuery{"k": {"a b"}}},
		{in: "k=1&k=2&k=3", want: CanonicalQuery{"k": {"1", "2", "3"}}},
		{in: "foo", want: CanonicalQuery{"foo": {""}}},
		{in: "=value&k=v", want: CanonicalQuery{"k": {"v"}}},
		{in: "k=%E4%B8%AD", want: CanonicalQuery{"k": {"中"}}},
		{in: "resource=Rés", want: CanonicalQuery{"resource": {"rés"}}},
		{in: "a=1&&b=2", want: CanonicalQuery{"a": {"1"}, "b": {"2"}}},
		{in: "k=%2", err: ErrCanonPct},
		{in: "k=%0A", err: ErrCanonCtrl},
		{in: "k=%80", err: ErrCanonUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := CanonicalizeQuery(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %s", err, tt.err.Code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("query (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClassifyAuthorityVectors(t *testing.T) {
	tests := []struct {
		in   string
		want Endpoint
		err  *CanonError
	}{
		{in: "169.254.169.254", want: EndpointIMDS},
		{in: "2852039166", want: EndpointIMDS},
		{in: "0xa9fea9fe", want: EndpointIMDS},
		{in: "0251.0376.0251.0376", want: EndpointIMDS},
		{in: "0xa9.0xfe.0xa9.0xfe", want: EndpointIMDS},
		{in: "169.0xfe.0251.254", want: EndpointIMDS},
		{in: "169.254.43518", want: EndpointIMDS},
		{in: "[::ffff:169.254.169.254]", want: EndpointIMDS},
		{in: "[::ffff:a9fe:a9fe]", want: EndpointIMDS},
		{in: "169.254.169.254:80", want: EndpointIMDS},
		{in: "168.63.129.16", want: EndpointWireServer},
		{in: "168.63.129.16:80", want: EndpointWireServer},
		{in: "2822734096", want: EndpointWireServer},
		{in: "0xa83f8110", want: EndpointWireServer},
		{in: "[::ffff:168.63.129.16]", want: EndpointWireServer},
		{in: "[::ffff:a83f:8110]", want: EndpointWireServer},
		{in: "168.63.129.16:32526", want: EndpointHostGA},
		{in: "0xa83f8110:32526", want: EndpointHostGA},
		{in: "[::ffff:a83f:8110]:32526", want: EndpointHostGA},
		{in: "169.254.169.254:8080", want: EndpointNone},
		{in: "metadata.azure.internal", want: EndpointNone},
		{in: "EXAMPLE.com.", want: EndpointNone},
		{in: "user@169.254.169.254", err: ErrCanonUserinfo},
		{in: "user:pass@169.254.169.254", err: ErrCanonUserinfo},
		{in: "169.254.169.254:80@evil.com", err: ErrCanonUserinfo},
		{in: "169.254.169.254:99999", err: ErrCanonPort},
		{in: "999.999.999.999", err: ErrCanonHost},
		{in: "foo_bar", err: ErrCanonHost},
		{in: "169.254.65536", err: ErrCanonHost},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, _, err := ClassifyAuthority(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %s", err, tt.err.Code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("endpoint = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCanonicalizeRequest(t *testing.T) {
	tests := []struct {
		method, uri, want string
		err               *CanonError
	}{
		{method: "GET", uri: "/Metadata/Instance?API-Version=2021-02-01", want: "/metadata/instance?api-version=2021-02-01"},
		{method: "GET", uri: "http://169.254.169.254/metadata?x=1", want: "/metadata?x=1"},
		{method: "GET", uri: "HTTP://169.254.169.254?x=1", want: "/?x=1"},
		{method: "GET", uri: "/a#frag", want: "/a"},
		{method: "GET", uri: "https://169.254.169.254/", err: ErrCanonScheme},
		{method: "GET", uri: "http://u@169.254.169.254/", err: ErrCanonUserinfo},
		{method: "TRACE", uri: "/", err: ErrCanonMethod},
		{method: "get", uri: "/", err: ErrCanonMethod},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.uri, func(t *testing.T) {
			got, err := Canonicalize(tt.method, tt.uri)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %s", err, tt.err.Code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := got.String(); s != tt.want {
				t.Errorf("canonical = %q, want %q", s, tt.want)
			}
		})
	}
}

func TestCanonicalPathHasPrefix(t *testing.T) {
	tests := []struct {
		rule, req string
		want      bool
	}{
		{"/metadata", "/metadata/identity", true},
		{"/metadata", "/metadata-attacker/identity", false},
		{"/metadata/identity/oauth2/token", "/metadata/identity", false},
		{"/Metadata", "/METADATA/Identity", true},
		{"/metadata/identity", "/metadata%2Fidentity/oauth2/token", true},
		{"/", "/anything/at/all", true},
		{"/", "/", true},
	}
	for _, tt := range tests {
		rule, err := CanonicalizePath(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		req, err := CanonicalizePath(tt.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := req.HasPrefix(rule); got != tt.want {
			t.Errorf("%s matches %s = %v, want %v", tt.rule, tt.req, got, tt.want)
		}
	}
}

// TestCheckTargetAgreesWithCanonicalize: the proxy's guard refuses exactly
// the targets Canonicalize refuses, with the same error, and allocates
// nothing on a metadata-sized target.
func TestCheckTargetAgreesWithCanonicalize(t *testing.T) {
	targets := []string{
		"/metadata/instance?api-version=2021-02-01", "/metadata/instance/%c0%ae%c0%ae/identity/oauth2/token",
		"/metadata/%2e%2e/identity", "/metadata%2Fidentity", "/a%zz", "/a%00b", "/a?b=%zz", "/a?%c0%ae=1",
		"http://169.254.169.254/metadata/instance", "http://user@host/x", "ftp://host/x", "", "/", "/a//b/./c?x&y=",
		"/metadata/instance%3Fx=1", "/\xff", "/a?b=\xc0\xae",
	}
	for _, method := range []string{"GET", "POST", "TRACE"} {
		for _, target := range targets {
			_, want := Canonicalize(method, target)
			got := CheckTarget(method, target)
			if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
				t.Errorf("CheckTarget(%s %q) = %v, Canonicalize says %v", method, target, got, want)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = CheckTarget("GET", "/metadata/instance?api-version=2021-02-01&format=json") }); n != 0 {
		t.Errorf("CheckTarget allocates %v times per call, want 0", n)
	}
}
