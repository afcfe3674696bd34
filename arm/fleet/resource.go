package fleet

import (
	"fmt"
	"strings"

	"github.com/metadatasec/gpa/arm"
)

// Kind is what a fleet resource is.
type Kind string

// The kinds of resources in a fleet.
const (
	KindVM       Kind = "vm"
	KindScaleSet Kind = "vmss"
	KindInstance Kind = "vmss-instance"
)

// Resource is one row of the inventory: a VM, a scale set (its model) or a
// scale-set instance, with its MSP settings.
type Resource struct {
	ID             string
	Name           string
	Kind           Kind
	SubscriptionID string
	ResourceGroup  string
	Location       string
	Tags           map[string]string
	OSType         arm.OSType
	// Image is publisher:offer:sku for a marketplace image, the gallery
	// image id otherwise, empty when unknown.
	Image string
	// ImageSupport says whether MSP documents support for Image.
	ImageSupport ImageSupport
	// Settings is proxyAgentSettings (the model's for a scale set); nil
	// when the resource has none.
	Settings *arm.ProxyAgentSettings
	// UpgradeMode is a scale set's upgrade policy mode.
	UpgradeMode string
	// LatestModelApplied is an instance's flag; nil when not reported.
	LatestModelApplied *bool
}

// ScaleSetID returns the scale set of an instance, "" for other kinds.
func (r Resource) ScaleSetID() string {
	if r.Kind != KindInstance {
		return ""
	}
	i := strings.LastIndex(strings.ToLower(r.ID), "/virtualmachines/")
	if i < 0 {
		return ""
	}
	return r.ID[:i]
}

// Enabled reports proxyAgentSettings.enabled.
func (r Resource) Enabled() bool {
	return r.Settings != nil && r.Settings.Enabled != nil && *r.Settings.Enabled
}

// EndpointState describes one endpoint's setting in a word: the mode, "profile"
// with the version reference, or "-" when unset.
func EndpointState(e *arm.HostEndpointSettings) (state, reference string) {
	switch {
	case e == nil:
		return "-", ""
	case e.InVMAccessControlProfileReferenceID != nil:
		return "profile", *e.InVMAccessControlProfileReferenceID
	case e.Mode != nil:
		return string(*e.Mode), ""
	}
	return "-", ""
}

// KeyIncarnationID returns the settings' keyIncarnationId, 0 when unset.
func (r Resource) KeyIncarnationID() int32 {
	if r.Settings == nil || r.Settings.KeyIncarnationID == nil {
		return 0
	}
	return *r.Settings.KeyIncarnationID
}

// resourceFromRow reads a Resource Graph row. Rows come from JSON decoded
// into maps; nothing is re-marshalled.
func resourceFromRow(row any) (Resource, error) {
	m, ok := row.(map[string]any)
	if !ok {
		return Resource{}, fmt.Errorf("fleet: row is %T, not an object", row)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	r := Resource{
		ID:             str(m["id"]),
		Name:           str(m["name"]),
		SubscriptionID: str(m["subscriptionId"]),
		ResourceGroup:  str(m["resourceGroup"]),
		Location:       str(m["location"]),
	}
	if r.ID == "" {
		return Resource{}, fmt.Errorf("fleet: row without id")
	}
	switch strings.ToLower(str(m["type"])) {
	case typeVM:
		r.Kind = KindVM
	case typeScaleSet:
		r.Kind = KindScaleSet
	case typeInstance:
		r.Kind = KindInstance
	default:
		return Resource{}, fmt.Errorf("fleet: %s: unexpected type %q", r.ID, str(m["type"]))
	}
	if tags, ok := m["tags"].(map[string]any); ok && len(tags) > 0 {
		r.Tags = make(map[string]string, len(tags))
		for k, v := range tags {
			r.Tags[k] = str(v)
		}
	}
	props, _ := m["properties"].(map[string]any)
	vmp := props
	if r.Kind == KindScaleSet {
		vmp = obj(props, "virtualMachineProfile")
		r.UpgradeMode = str(obj(props, "upgradePolicy")["mode"])
	}
	if r.Kind == KindInstance {
		if b, ok := props["latestModelApplied"].(bool); ok {
			r.LatestModelApplied = &b
		}
	}
	storage := obj(vmp, "storageProfile")
	r.OSType = arm.OSType(str(obj(storage, "osDisk")["osType"]))
	r.Image = imageOf(obj(storage, "imageReference"))
	r.ImageSupport = SupportOf(r.Image)
	if pas, ok := obj(vmp, "securityProfile")["proxyAgentSettings"].(map[string]any); ok {
		r.Settings = settingsFromMap(pas)
	}
	return r, nil
}

func obj(m map[string]any, k string) map[string]any {
	v, _ := m[k].(map[string]any)
	return v
}

func imageOf(ref map[string]any) string {
	if ref == nil {
		return ""
	}
	str := func(k string) string { s, _ := ref[k].(string); return s }
	if p, o, s := str("publisher"), str("offer"), str("sku"); p != "" || o != "" {
		return p + ":" + o + ":" + s
	}
	if id := str("id"); id != "" {
		return id
	}
	return str("sharedGalleryImageId") + str("communityGalleryImageId")
}

func settingsFromMap(m map[string]any) *arm.ProxyAgentSettings {
	s := &arm.ProxyAgentSettings{}
	if b, ok := m["enabled"].(bool); ok {
		s.Enabled = &b
	}
	if b, ok := m["addProxyAgentExtension"].(bool); ok {
		s.AddProxyAgentExtension = &b
	}
	if v, ok := m["mode"].(string); ok {
		md := arm.Mode(v)
		s.Mode = &md
	}
	if f, ok := m["keyIncarnationId"].(float64); ok {
		k := int32(f)
		s.KeyIncarnationID = &k
	}
	s.WireServer = endpointFromMap(obj(m, "wireServer"))
	s.IMDS = endpointFromMap(obj(m, "imds"))
	return s
}

func endpointFromMap(m map[string]any) *arm.HostEndpointSettings {
	if len(m) == 0 {
		return nil
	}
	e := &arm.HostEndpointSettings{}
	if v, ok := m["mode"].(string); ok && v != "" {
		md := arm.Mode(v)
		e.Mode = &md
	}
	if v, ok := m["inVMAccessControlProfileReferenceId"].(string); ok && v != "" {
		e.InVMAccessControlProfileReferenceID = &v
	}
	if b, ok := m["useLocalFileRules"].(bool); ok {
		e.UseLocalFileRules = &b
	}
	if e.Mode == nil && e.InVMAccessControlProfileReferenceID == nil && e.UseLocalFileRules == nil {
		return nil
	}
	return e
}
