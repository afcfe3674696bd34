package arm_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
	"github.com/metadatasec/gpa/msp"
)

func TestGalleryProfileLifecycle(t *testing.T) {
	srv := newServer(t, &armtest.Options{LROPolls: 2, PageSize: 1})
	c := newClient(t, srv, nil)

	// Create two profiles.
	for _, p := range []struct {
		name string
		ep   arm.HostEndpoint
	}{{"ws", arm.EndpointWireServer}, {"imds", arm.EndpointIMDS}} {
		poller, err := c.BeginCreateOrUpdateProfile(ctx(t), rg, gallery, p.name, arm.Profile{
			Location:   "West US",
			Properties: &arm.ProfileProperties{OSType: arm.OSLinux, ApplicableHostEndpoint: p.ep},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := poller.PollUntilDone(ctx(t), fast)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != p.name || val(got.Properties.ProvisioningState) != "Succeeded" || got.Properties.ApplicableHostEndpoint != p.ep {
			t.Errorf("profile = %+v %+v", got.Profile, got.Properties)
		}
	}
	w := writes(srv)
	if len(w) != 2 || w[0].Method != http.MethodPut || w[0].Path != profileID("ws") || w[0].APIVersion() != arm.DefaultGalleryAPIVersion {
		t.Fatalf("writes = %+v", w)
	}
	jsonEqual(t, "profile body", w[0].Body, `{"location":"West US","properties":{"osType":"Linux","applicableHostEndpoint":"WireServer"}}`)

	// A version with rules from msp's model.
	rules := &msp.AccessControlRules{
		Privileges:      []msp.Privilege{{Name: "GoalState", Path: "/machine", QueryParameters: map[string]string{"comp": "goalstate"}}},
		Roles:           []msp.Role{{Name: "Provisioning", Privileges: []string{"GoalState"}}},
		Identities:      []msp.Identity{{Name: "agent", UserName: "root", ExePath: "/usr/bin/waagent"}},
		RoleAssignments: []msp.RoleAssignment{{Role: "Provisioning", Identities: []string{"agent"}}},
	}
	srv.ResetRequests()
	vp, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "ws", "1.0.0", arm.ProfileVersion{
		Location: "West US",
		Properties: &arm.ProfileVersionProperties{
			Mode: arm.ModeOf(msp.ModeEnforce), DefaultAccess: arm.DefaultAccessOf(msp.AccessDeny), Rules: rules,
			TargetLocations: []arm.TargetRegion{{Name: "West US"}, {Name: region}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vp.PollUntilDone(ctx(t), fast)
	if err != nil {
		t.Fatal(err)
	}
	w = writes(srv)
	if len(w) != 1 || w[0].Path != versionID("ws", "1.0.0") {
		t.Fatalf("writes = %+v", w)
	}
	jsonEqual(t, "version body", w[0].Body, `{"location":"West US","properties":{"mode":"Enforce","defaultAccess":"Deny",
		"rules":{"privileges":[{"name":"GoalState","path":"/machine","queryParameters":{"comp":"goalstate"}}],
		         "roles":[{"name":"Provisioning","privileges":["GoalState"]}],
		         "identities":[{"name":"agent","userName":"root","exePath":"/usr/bin/waagent"}],
		         "roleAssignments":[{"role":"Provisioning","identities":["agent"]}]},
		"targetLocations":[{"name":"West US"},{"name":"`+region+`"}]}}`)
	if v.Properties.PublishedDate == nil || v.Properties.ReplicationStatus == nil {
		t.Errorf("read-only fields missing from the result: %+v", v.Properties)
	}
	if d := cmp.Diff(rules.Privileges, v.Properties.Rules.Privileges); d != "" {
		t.Errorf("rules round trip (-want +got):\n%s", d)
	}
	if m, err := v.Properties.Mode.MSP(); err != nil || m != msp.ModeEnforce {
		t.Errorf("Mode.MSP = %v, %v", m, err)
	}

	// Updating from a read result drops the read-only fields.
	got, err := c.GetProfileVersion(ctx(t), rg, gallery, "ws", "1.0.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	got.Properties.Mode = arm.ModeAudit
	srv.ResetRequests()
	vp, err = c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "ws", "1.0.0", got.ProfileVersion, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vp.PollUntilDone(ctx(t), fast); err != nil {
		t.Fatal(err)
	}
	var sent map[string]any
	mustUnmarshal(t, writes(srv)[0].Body, &sent)
	props := sent["properties"].(map[string]any)
	for _, k := range []string{"publishedDate", "provisioningState", "replicationStatus"} {
		if _, ok := props[k]; ok {
			t.Errorf("update sent read-only %s", k)
		}
	}
	if _, ok := sent["id"]; ok {
		t.Error("update sent id")
	}

	// Lists page through nextLink.
	var names []string
	pager := c.NewListProfilesPager(rg, gallery, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			names = append(names, p.Name)
		}
	}
	if d := cmp.Diff([]string{"imds", "ws"}, names); d != "" {
		t.Errorf("profiles (-want +got):\n%s", d)
	}
	vpager := c.NewListProfileVersionsPager(rg, gallery, "ws", nil)
	page, err := vpager.NextPage(ctx(t))
	if err != nil || len(page.Value) != 1 || page.Value[0].Name != "1.0.0" || vpager.More() {
		t.Errorf("versions = %+v, %v", page, err)
	}

	// A profile with versions cannot be deleted; without, it can.
	if _, err := c.BeginDeleteProfile(ctx(t), rg, gallery, "ws", nil); err == nil {
		t.Error("deleted a profile that has versions")
	}
	for _, del := range []func() (*arm.DeleteResponse, error){
		func() (*arm.DeleteResponse, error) {
			p, err := c.BeginDeleteProfileVersion(ctx(t), rg, gallery, "ws", "1.0.0", nil)
			if err != nil {
				return nil, err
			}
			r, err := p.PollUntilDone(ctx(t), fast)
			return &r, err
		},
		func() (*arm.DeleteResponse, error) {
			p, err := c.BeginDeleteProfile(ctx(t), rg, gallery, "ws", nil)
			if err != nil {
				return nil, err
			}
			r, err := p.PollUntilDone(ctx(t), fast)
			return &r, err
		},
	} {
		if _, err := del(); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.GetProfile(ctx(t), rg, gallery, "ws", nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
		t.Errorf("GetProfile after delete = %v", err)
	}
}

func TestGalleryValidation(t *testing.T) {
	srv := newServer(t, nil)
	c := newClient(t, srv, nil)
	okProps := &arm.ProfileVersionProperties{Mode: arm.ModeAudit, DefaultAccess: arm.AccessAllow}
	tests := []struct {
		name string
		do   func() error
		kind error
	}{
		{"profile without location", func() error {
			_, err := c.BeginCreateOrUpdateProfile(ctx(t), rg, gallery, "p", arm.Profile{Properties: &arm.ProfileProperties{OSType: arm.OSLinux, ApplicableHostEndpoint: arm.EndpointIMDS}}, nil)
			return err
		}, arm.ErrInvalidRequest},
		{"profile with bad endpoint", func() error {
			_, err := c.BeginCreateOrUpdateProfile(ctx(t), rg, gallery, "p", arm.Profile{Location: region, Properties: &arm.ProfileProperties{OSType: arm.OSLinux, ApplicableHostEndpoint: "HostGA"}}, nil)
			return err
		}, arm.ErrInvalidRequest},
		{"version with lowercase mode", func() error {
			_, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "p", "1", arm.ProfileVersion{Location: region, Properties: &arm.ProfileVersionProperties{Mode: "enforce", DefaultAccess: arm.AccessAllow}}, nil)
			return err
		}, arm.ErrInvalidMode},
		{"version with bad default access", func() error {
			_, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "p", "1", arm.ProfileVersion{Location: region, Properties: &arm.ProfileVersionProperties{Mode: arm.ModeAudit, DefaultAccess: "allow"}}, nil)
			return err
		}, arm.ErrInvalidRequest},
		{"version with dangling role", func() error {
			props := *okProps
			props.Rules = &msp.AccessControlRules{Roles: []msp.Role{{Name: "r", Privileges: []string{"missing"}}}}
			_, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "p", "1", arm.ProfileVersion{Location: region, Properties: &props}, nil)
			return err
		}, msp.ErrInvalidRules},
		{"version with empty name", func() error {
			_, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "p", "", arm.ProfileVersion{Location: region, Properties: okProps}, nil)
			return err
		}, arm.ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want %v", err, tt.kind)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Errorf("%d requests sent", n)
			}
		})
	}
	// The parent must exist on the service side.
	p, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "nope", "1", arm.ProfileVersion{Location: region, Properties: okProps}, nil)
	var re *azcore.ResponseError
	if p != nil || !errors.As(err, &re) || re.ErrorCode != "ParentResourceNotFound" {
		t.Errorf("version without profile = %v", err)
	}
}

// TestProfileVersionPutKeepsUnknownFields: a version read from ARM and
// written back with one change keeps every field this package does not
// model (TargetRegion encryption and additionalReplicaSets, fields of later
// API versions), at every depth; only the caller's changes differ.
func TestProfileVersionPutKeepsUnknownFields(t *testing.T) {
	srv := newServer(t, nil)
	seedProfiles(srv)
	id := versionID("wsLinux", "2.0.0")
	must(srv.SetResource(id, []byte(`{"location":"westus","futureTopLevel":{"a":1},
		"systemData":{"createdBy":"someone"},
		"properties":{"mode":"Audit","defaultAccess":"Deny","futureProperty":"kept",
		"publishedDate":"2026-01-02T03:04:05Z","provisioningState":"Succeeded",
		"targetLocations":[
			{"name":"West US","regionalReplicaCount":1,"encryption":{"osDiskImage":{"diskEncryptionSetId":"des1"}},"additionalReplicaSets":[{"storageAccountType":"Premium_LRS","regionalReplicaCount":2}]},
			{"name":"East US 2 EUAP","excludeFromLatest":false,"futureRegionField":7}]}}`)))
	c := newClient(t, srv, nil)
	got, err := c.GetProfileVersion(ctx(t), rg, gallery, "wsLinux", "2.0.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	v := got.ProfileVersion
	v.Properties.Mode = arm.ModeEnforce
	v.Properties.TargetLocations = append(v.Properties.TargetLocations, arm.TargetRegion{Name: "North Europe"})
	v.Properties.TargetLocations[1].RegionalReplicaCount = ptr[int32](3)
	srv.ResetRequests()
	p, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "wsLinux", "2.0.0", v, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctx(t), fast); err != nil {
		t.Fatal(err)
	}
	w := writes(srv)
	if len(w) != 1 {
		t.Fatalf("%d writes", len(w))
	}
	jsonEqual(t, "PUT body", w[0].Body, `{"location":"westus","futureTopLevel":{"a":1},
		"properties":{"mode":"Enforce","defaultAccess":"Deny","futureProperty":"kept",
		"targetLocations":[
			{"name":"West US","regionalReplicaCount":1,"encryption":{"osDiskImage":{"diskEncryptionSetId":"des1"}},"additionalReplicaSets":[{"storageAccountType":"Premium_LRS","regionalReplicaCount":2}]},
			{"name":"East US 2 EUAP","excludeFromLatest":false,"futureRegionField":7,"regionalReplicaCount":3},
			{"name":"North Europe"}]}}`)

	// Removing a region removes it, and only it.
	v.Properties.TargetLocations = v.Properties.TargetLocations[:1]
	srv.ResetRequests()
	if _, err := c.BeginCreateOrUpdateProfileVersion(ctx(t), rg, gallery, "wsLinux", "2.0.0", v, nil); err != nil {
		t.Fatal(err)
	}
	w = writes(srv)
	jsonEqual(t, "PUT body after removing regions", w[0].Body, `{"location":"westus","futureTopLevel":{"a":1},
		"properties":{"mode":"Enforce","defaultAccess":"Deny","futureProperty":"kept",
		"targetLocations":[
			{"name":"West US","regionalReplicaCount":1,"encryption":{"osDiskImage":{"diskEncryptionSetId":"des1"}},"additionalReplicaSets":[{"storageAccountType":"Premium_LRS","regionalReplicaCount":2}]}]}}`)
}

// TestProfilePutKeepsUnknownFields does the same for a profile: a new
// description, and nothing else, changes.
func TestProfilePutKeepsUnknownFields(t *testing.T) {
	srv := newServer(t, nil)
	must(srv.SetResource(profileID("ws"), []byte(`{"location":"westus","tags":{"team":"a"},
		"properties":{"osType":"Linux","applicableHostEndpoint":"WireServer","provisioningState":"Succeeded","futureProperty":{"x":[1,2]}}}`)))
	c := newClient(t, srv, nil)
	got, err := c.GetProfile(ctx(t), rg, gallery, "ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	pr := got.Profile
	pr.Properties.Description = ptr("rules for the web tier")
	srv.ResetRequests()
	if _, err := c.BeginCreateOrUpdateProfile(ctx(t), rg, gallery, "ws", pr, nil); err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "PUT body", writes(srv)[0].Body, `{"location":"westus","tags":{"team":"a"},
		"properties":{"osType":"Linux","applicableHostEndpoint":"WireServer","futureProperty":{"x":[1,2]},"description":"rules for the web tier"}}`)
}
