package arm_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

const (
	sub     = "00000000-0000-0000-0000-0000000000aa"
	rg      = "rg1"
	gallery = "gal"
	region  = "eastus2euap"
	rgPath  = "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute"
)

func vmID(name string) string   { return rgPath + "/virtualMachines/" + name }
func vmssID(name string) string { return rgPath + "/virtualMachineScaleSets/" + name }
func profileID(p string) string {
	return rgPath + "/galleries/" + gallery + "/inVMAccessControlProfiles/" + p
}
func versionID(p, v string) string { return profileID(p) + "/versions/" + v }

var fast = &runtime.PollUntilDoneOptions{Frequency: time.Millisecond}

func newServer(t testing.TB, opts *armtest.Options) *armtest.Server {
	t.Helper()
	srv := armtest.NewServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t testing.TB, srv *armtest.Server, opts *arm.ClientOptions) *arm.Client {
	t.Helper()
	o := arm.ClientOptions{}
	if opts != nil {
		o = *opts
	}
	o.ClientOptions = srv.ClientOptions()
	c, err := arm.NewClient(sub, &fake.TokenCredential{}, &o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// jsonEqual compares two JSON documents structurally.
func jsonEqual(t testing.TB, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: got invalid JSON %q: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: want invalid JSON: %v", what, err)
	}
	if d := cmp.Diff(w, g); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// writes returns the recorded requests other than GETs.
func writes(srv *armtest.Server) []armtest.Request {
	var out []armtest.Request
	for _, r := range srv.Requests() {
		if r.Method != "GET" {
			out = append(out, r)
		}
	}
	return out
}

func seedProfiles(srv *armtest.Server) {
	add := func(name, os, ep string) {
		must(srv.SetResource(profileID(name), []byte(`{"location":"`+region+`","properties":{"osType":"`+os+`","applicableHostEndpoint":"`+ep+`"}}`)))
		must(srv.SetResource(versionID(name, "1.0.0"), []byte(`{"location":"westus","properties":{"mode":"Enforce","defaultAccess":"Deny","targetLocations":[{"name":"West US"},{"name":"`+region+`"}]}}`)))
		must(srv.SetResource(versionID(name, "0.9.0"), []byte(`{"location":"westus","properties":{"mode":"Enforce","defaultAccess":"Deny","targetLocations":[{"name":"West US"}]}}`)))
	}
	add("wsLinux", "Linux", "WireServer")
	add("imdsLinux", "Linux", "IMDS")
	add("wsWindows", "Windows", "WireServer")
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func ptr[T any](v T) *T { return &v }

// val returns *p, or the zero value when p is nil.
func val[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func fakeCred() *fake.TokenCredential { return &fake.TokenCredential{} }
