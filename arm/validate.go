package arm

import (
	"errors"
	"fmt"
	"strings"

	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
)

// ProfileVersionRef is a parsed inVMAccessControlProfile version id.
type ProfileVersionRef struct {
	SubscriptionID string
	ResourceGroup  string
	Gallery        string
	Profile        string
	Version        string
}

// String returns the canonical resource id.
func (r ProfileVersionRef) String() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/galleries/%s/inVMAccessControlProfiles/%s/versions/%s",
		r.SubscriptionID, r.ResourceGroup, r.Gallery, r.Profile, r.Version)
}

var profileVersionChain = []azarm.ResourceType{
	azarm.TenantResourceType,
	azarm.SubscriptionResourceType,
	azarm.ResourceGroupResourceType,
	azarm.NewResourceType("Microsoft.Compute", "galleries"),
	azarm.NewResourceType("Microsoft.Compute", "galleries/inVMAccessControlProfiles"),
	azarm.NewResourceType("Microsoft.Compute", "galleries/inVMAccessControlProfiles/versions"),
}

// ParseProfileVersionID parses a gallery inVMAccessControlProfile version id.
// Anything else, including a profile id without /versions/{v}, is an *Error
// with code InvalidParameter matching ErrInvalidProfileReference.
func ParseProfileVersionID(id string) (ProfileVersionRef, error) {
	bad := func(detail string) (ProfileVersionRef, error) {
		return ProfileVersionRef{}, clientError(CodeInvalidParameter, ErrInvalidProfileReference, "", detail, actionInvalidReference)
	}
	rid, err := azarm.ParseResourceID(id)
	if err != nil {
		return bad(fmt.Sprintf("%q: %v", id, err))
	}
	if err := rid.ValidateResourceTypeChain(profileVersionChain); err != nil {
		return bad(fmt.Sprintf("%q: %v", id, err))
	}
	return ProfileVersionRef{
		SubscriptionID: rid.SubscriptionID,
		ResourceGroup:  rid.ResourceGroupName,
		Gallery:        rid.Parent.Parent.Name,
		Profile:        rid.Parent.Name,
		Version:        rid.Name,
	}, nil
}

// Validate checks a settings change the way the service would, without any
// network call: mode XOR profile per endpoint, valid modes, well-formed
// profile version ids, no deprecated top-level mode, no negative
// keyIncarnationId, and fields the API version knows. apiVersion may be empty
// to skip the version checks. The first problem is returned as an *Error.
func (s *ProxyAgentSettings) Validate(apiVersion string) error {
	return s.validate("securityProfile.proxyAgentSettings", apiVersion)
}

func (s *ProxyAgentSettings) validate(path, apiVersion string) error {
	if s == nil || (s.Enabled == nil && s.Mode == nil && s.KeyIncarnationID == nil &&
		s.WireServer == nil && s.IMDS == nil && s.AddProxyAgentExtension == nil) {
		return clientError(CodeBadRequest, ErrInvalidRequest, path, "the change is empty", "set at least one field")
	}
	if s.Mode != nil {
		return clientError(CodeBadRequest, ErrInvalidRequest, path+".mode",
			"the top-level mode is deprecated", "set wireServer.mode and imds.mode instead")
	}
	if s.KeyIncarnationID != nil && *s.KeyIncarnationID < 0 {
		return clientError(CodeBadRequest, ErrKeyIncarnationNotIncreasing, path+".keyIncarnationId",
			fmt.Sprintf("negative value %d", *s.KeyIncarnationID), actionKeyIncarnation)
	}
	if s.AddProxyAgentExtension != nil && apiVersion != "" && apiVersion < "2025-04-01" {
		return clientError(CodeBadRequest, ErrInvalidRequest, path+".addProxyAgentExtension",
			"needs api-version 2025-04-01 or later, client uses "+apiVersion, "raise ComputeAPIVersion")
	}
	for _, ep := range []struct {
		name string
		e    *HostEndpointSettings
	}{{"wireServer", s.WireServer}, {"imds", s.IMDS}} {
		if ep.e == nil {
			continue
		}
		if err := ep.e.validate(path+"."+ep.name, apiVersion); err != nil {
			return err
		}
	}
	return nil
}

func (e *HostEndpointSettings) validate(path, apiVersion string) error {
	switch {
	case e.Mode != nil && e.InVMAccessControlProfileReferenceID != nil:
		return clientError(CodeBadRequest, ErrModeAndProfile, path, "", actionModeAndProfile)
	case e.Mode == nil && e.InVMAccessControlProfileReferenceID == nil && e.UseLocalFileRules == nil:
		return clientError(CodeBadRequest, ErrInvalidRequest, path, "endpoint settings without any field", "set mode or inVMAccessControlProfileReferenceId, or leave the endpoint out")
	}
	if e.Mode != nil && !e.Mode.valid() {
		return clientError(CodeBadRequest, ErrInvalidMode, path+".mode", fmt.Sprintf("%q", string(*e.Mode)), actionInvalidMode)
	}
	if e.InVMAccessControlProfileReferenceID != nil {
		if _, err := ParseProfileVersionID(*e.InVMAccessControlProfileReferenceID); err != nil {
			err.(*Error).Target = path + ".inVMAccessControlProfileReferenceId"
			return err
		}
	}
	if e.UseLocalFileRules != nil && apiVersion != "" && apiVersion < LocalFileRulesAPIVersion {
		return clientError(CodeBadRequest, ErrInvalidRequest, path+".useLocalFileRules",
			"needs api-version "+LocalFileRulesAPIVersion+" or later, client uses "+apiVersion, "raise ComputeAPIVersion")
	}
	return nil
}

// profileFacts is what the client learned about a linked profile version.
type profileFacts struct {
	profile *Profile
	version *ProfileVersion // nil when the version does not exist
}

// checkAgainst checks the change against the current resource: the key
// must go up, and linked profiles must fit the OS, the endpoint slot and the
// region. facts is keyed by endpoint JSON name and may be nil.
func checkAgainst(path string, change, current *ProxyAgentSettings, osType OSType, location string, facts map[string]profileFacts) error {
	if change.KeyIncarnationID != nil {
		var cur int32
		if current != nil && current.KeyIncarnationID != nil {
			cur = *current.KeyIncarnationID
		}
		if err := checkKeyAbove(path, *change.KeyIncarnationID, cur); err != nil {
			return err
		}
	}
	for _, slot := range []string{"wireServer", "imds"} {
		f, ok := facts[slot]
		if !ok {
			continue
		}
		target := path + "." + slot + ".inVMAccessControlProfileReferenceId"
		if f.version == nil || f.profile == nil || !replicatedTo(f.version, location) {
			return clientError(CodeProfileNotFound, ErrProfileNotFound, target, "not available in region "+location, actionProfileNotFound)
		}
		want := EndpointWireServer
		if slot == "imds" {
			want = EndpointIMDS
		}
		p := f.profile.Properties
		if p == nil {
			continue
		}
		if !strings.EqualFold(string(p.ApplicableHostEndpoint), string(want)) {
			return clientError(CodeProfileNotMatchHostEndpoint, ErrProfileEndpointMismatch, target,
				fmt.Sprintf("profile applies to %s, referenced from %s", p.ApplicableHostEndpoint, slot), actionEndpointMismatch)
		}
		if osType != "" && !strings.EqualFold(string(p.OSType), string(osType)) {
			return clientError(CodeProfileNotMatchOSDisk, ErrProfileOSMismatch, target,
				fmt.Sprintf("profile is for %s, OS disk is %s", p.OSType, osType), actionOSMismatch)
		}
	}
	return nil
}

// checkKeyAbove refuses a keyIncarnationId n that is not above the current
// cur. An equal value is refused too: it would not reset the key, and a
// caller who sends it believes it does.
func checkKeyAbove(path string, n, cur int32) error {
	if n > cur {
		return nil
	}
	rel := "is below"
	if n == cur {
		rel = "equals"
	}
	return clientError(CodeBadRequest, ErrKeyIncarnationNotIncreasing, path+".keyIncarnationId",
		fmt.Sprintf("%d %s the current %d, so the key would not be reset", n, rel, cur),
		actionKeyIncarnation+"; leave keyIncarnationId out to keep the current key")
}

// replicatedTo reports whether v is published in location. A version without
// targetLocations lives in its own location only.
func replicatedTo(v *ProfileVersion, location string) bool {
	if v.Properties == nil || len(v.Properties.TargetLocations) == 0 {
		return sameRegion(v.Location, location)
	}
	for _, t := range v.Properties.TargetLocations {
		if sameRegion(t.Name, location) {
			return true
		}
	}
	return false
}

// ErrNotApplied: the resource read after an update does not show the change.
var ErrNotApplied = errors.New("change not applied")

// AppliedTo reports whether got, the settings read after an update, show
// every field of the change s. For an endpoint switched between an inline
// mode and a linked profile it also checks that the old configuration is
// gone, because the client sends only the new one and relies on the service
// to drop the other: how the service merges a PATCH into nested settings is
// not documented. A mismatch is an *Error matching ErrNotApplied.
func (s *ProxyAgentSettings) AppliedTo(got *ProxyAgentSettings) error {
	const path = "securityProfile.proxyAgentSettings"
	if got == nil {
		got = &ProxyAgentSettings{}
	}
	notApplied := func(field, detail string) error {
		return clientError("NotApplied", ErrNotApplied, path+"."+field, detail, "read the resource again; if it persists, send the change again or set the endpoint with a full PUT")
	}
	if s.Enabled != nil && (got.Enabled == nil || *got.Enabled != *s.Enabled) {
		return notApplied("enabled", "")
	}
	if s.KeyIncarnationID != nil && (got.KeyIncarnationID == nil || *got.KeyIncarnationID < *s.KeyIncarnationID) {
		return notApplied("keyIncarnationId", "")
	}
	if s.AddProxyAgentExtension != nil && (got.AddProxyAgentExtension == nil || *got.AddProxyAgentExtension != *s.AddProxyAgentExtension) {
		return notApplied("addProxyAgentExtension", "")
	}
	for _, ep := range []struct {
		name      string
		want, got *HostEndpointSettings
	}{{"wireServer", s.WireServer, got.WireServer}, {"imds", s.IMDS, got.IMDS}} {
		if ep.want == nil {
			continue
		}
		g := ep.got
		if g == nil {
			g = &HostEndpointSettings{}
		}
		if m := ep.want.Mode; m != nil {
			if g.Mode == nil || *g.Mode != *m {
				return notApplied(ep.name+".mode", "")
			}
			if g.InVMAccessControlProfileReferenceID != nil {
				return notApplied(ep.name+".inVMAccessControlProfileReferenceId", "the old profile link is still set")
			}
		}
		if r := ep.want.InVMAccessControlProfileReferenceID; r != nil {
			if g.InVMAccessControlProfileReferenceID == nil || !strings.EqualFold(*g.InVMAccessControlProfileReferenceID, *r) {
				return notApplied(ep.name+".inVMAccessControlProfileReferenceId", "")
			}
			if g.Mode != nil {
				return notApplied(ep.name+".mode", "the old inline mode is still set")
			}
		}
		if u := ep.want.UseLocalFileRules; u != nil && (g.UseLocalFileRules == nil || *g.UseLocalFileRules != *u) {
			return notApplied(ep.name+".useLocalFileRules", "")
		}
	}
	return nil
}
