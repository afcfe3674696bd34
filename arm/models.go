package arm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/metadatasec/gpa/msp"
)

// Mode is an endpoint mode as ARM spells it. msp.Mode marshals lowercase for
// the guest; ARM wants the capitalised form, hence a separate type.
type Mode string

// The endpoint modes ARM accepts.
const (
	ModeAudit    Mode = "Audit"
	ModeEnforce  Mode = "Enforce"
	ModeDisabled Mode = "Disabled"
)

// ModeOf converts a guest-side mode to its ARM form.
func ModeOf(m msp.Mode) Mode { return Mode(m.DisplayName()) }

// MSP converts the ARM mode to the guest-side mode. Unlike the service, which
// compares exactly, it accepts any letter case.
func (m Mode) MSP() (msp.Mode, error) {
	v, err := msp.ParseMode(string(m))
	if err != nil {
		return msp.ModeDisabled, fmt.Errorf("%w: %q", ErrInvalidMode, string(m))
	}
	return v, nil
}

func (m Mode) valid() bool {
	return m == ModeAudit || m == ModeEnforce || m == ModeDisabled
}

// DefaultAccess is a rule set's default access as ARM spells it.
type DefaultAccess string

// The default-access values ARM accepts.
const (
	AccessAllow DefaultAccess = "Allow"
	AccessDeny  DefaultAccess = "Deny"
)

// DefaultAccessOf converts the guest-side value to its ARM form.
func DefaultAccessOf(a msp.DefaultAccess) DefaultAccess { return DefaultAccess(a.DisplayName()) }

// MSP converts the ARM value to the guest-side value.
func (a DefaultAccess) MSP() (msp.DefaultAccess, error) {
	v, err := msp.ParseDefaultAccess(string(a))
	if err != nil {
		return msp.AccessDeny, fmt.Errorf("%w: defaultAccess %q", ErrInvalidRequest, string(a))
	}
	return v, nil
}

// OSType is a gallery profile's or OS disk's operating system.
type OSType string

// The OS types.
const (
	OSLinux   OSType = "Linux"
	OSWindows OSType = "Windows"
)

// HostEndpoint is the endpoint a gallery profile applies to.
type HostEndpoint string

// The host endpoints a profile can apply to.
const (
	EndpointWireServer HostEndpoint = "WireServer"
	EndpointIMDS       HostEndpoint = "IMDS"
)

// ProxyAgentSettings is securityProfile.proxyAgentSettings. As an update,
// a nil field means "leave unchanged": only non-nil fields are sent.
type ProxyAgentSettings struct {
	// Enabled is the master switch.
	Enabled *bool `json:"enabled,omitempty"`
	// Mode is the deprecated top-level mode. Read it only as legacy state;
	// the client refuses to send it, use the per-endpoint modes.
	Mode *Mode `json:"mode,omitempty"`
	// KeyIncarnationID may only go up; raising it resets the latched key.
	// Prefer the ResetKey operations, which raise it safely.
	KeyIncarnationID *int32 `json:"keyIncarnationId,omitempty"`
	// WireServer configures 168.63.129.16.
	WireServer *HostEndpointSettings `json:"wireServer,omitempty"`
	// IMDS configures 169.254.169.254.
	IMDS *HostEndpointSettings `json:"imds,omitempty"`
	// AddProxyAgentExtension installs the extension implicitly (Linux,
	// api-version 2025-04-01 and later).
	AddProxyAgentExtension *bool `json:"addProxyAgentExtension,omitempty"`
}

// HostEndpointSettings configures one endpoint either inline (Mode) or by a
// gallery profile version (InVMAccessControlProfileReferenceID), never both.
type HostEndpointSettings struct {
	// Mode is the inline mode.
	Mode *Mode `json:"mode,omitempty"`
	// InVMAccessControlProfileReferenceID links a gallery profile version.
	InVMAccessControlProfileReferenceID *string `json:"inVMAccessControlProfileReferenceId,omitempty"`
	// UseLocalFileRules also loads rules from a file on the VM
	// (api-version 2026-04-01 and later).
	UseLocalFileRules *bool `json:"useLocalFileRules,omitempty"`
}

// InlineMode returns endpoint settings that use mode m. When the endpoint was
// linked to a profile, the service is expected to drop the link; confirm with
// AppliedTo on the updated resource.
func InlineMode(m Mode) *HostEndpointSettings { return &HostEndpointSettings{Mode: &m} }

// LinkedProfile returns endpoint settings that link the profile version id.
// When the endpoint had an inline mode, the service drops the mode (the
// service team's guidance); confirm with AppliedTo on the updated resource.
func LinkedProfile(versionID string) *HostEndpointSettings {
	return &HostEndpointSettings{InVMAccessControlProfileReferenceID: &versionID}
}

// SecurityProfile is the part of a VM's securityProfile this package reads.
type SecurityProfile struct {
	ProxyAgentSettings *ProxyAgentSettings `json:"proxyAgentSettings,omitempty"`
}

// StorageProfile is the part of storageProfile this package reads.
type StorageProfile struct {
	OSDisk *OSDisk `json:"osDisk,omitempty"`
}

// OSDisk is the part of osDisk this package reads.
type OSDisk struct {
	OSType *OSType `json:"osType,omitempty"`
}

// VirtualMachine is the subset of Microsoft.Compute/virtualMachines this
// package reads.
type VirtualMachine struct {
	ID         string                    `json:"id,omitempty"`
	Name       string                    `json:"name,omitempty"`
	Location   string                    `json:"location,omitempty"`
	ETag       *azcore.ETag              `json:"etag,omitempty"`
	Properties *VirtualMachineProperties `json:"properties,omitempty"`
}

// VirtualMachineProperties is the subset of a VM's properties this package
// reads.
type VirtualMachineProperties struct {
	ProvisioningState *string          `json:"provisioningState,omitempty"`
	SecurityProfile   *SecurityProfile `json:"securityProfile,omitempty"`
	StorageProfile    *StorageProfile  `json:"storageProfile,omitempty"`
}

// ProxyAgentSettings returns the VM's settings, or nil.
func (vm *VirtualMachine) ProxyAgentSettings() *ProxyAgentSettings {
	if vm == nil || vm.Properties == nil || vm.Properties.SecurityProfile == nil {
		return nil
	}
	return vm.Properties.SecurityProfile.ProxyAgentSettings
}

// ScaleSet is the subset of Microsoft.Compute/virtualMachineScaleSets this
// package reads.
type ScaleSet struct {
	ID         string              `json:"id,omitempty"`
	Name       string              `json:"name,omitempty"`
	Location   string              `json:"location,omitempty"`
	ETag       *azcore.ETag        `json:"etag,omitempty"`
	Properties *ScaleSetProperties `json:"properties,omitempty"`
}

// ScaleSetProperties is the subset of a scale set's properties this package
// reads.
type ScaleSetProperties struct {
	ProvisioningState     *string                 `json:"provisioningState,omitempty"`
	UpgradePolicy         *UpgradePolicy          `json:"upgradePolicy,omitempty"`
	VirtualMachineProfile *ScaleSetMachineProfile `json:"virtualMachineProfile,omitempty"`
}

// UpgradePolicy says how model changes reach instances.
type UpgradePolicy struct {
	// Mode is Automatic, Manual or Rolling. With Manual, call
	// BeginManualUpgrade for the instances.
	Mode *string `json:"mode,omitempty"`
}

// ScaleSetMachineProfile is the scale-set model's virtualMachineProfile.
type ScaleSetMachineProfile struct {
	SecurityProfile *SecurityProfile `json:"securityProfile,omitempty"`
	StorageProfile  *StorageProfile  `json:"storageProfile,omitempty"`
}

// ProxyAgentSettings returns the scale-set model's settings, or nil.
func (s *ScaleSet) ProxyAgentSettings() *ProxyAgentSettings {
	if s == nil || s.Properties == nil || s.Properties.VirtualMachineProfile == nil ||
		s.Properties.VirtualMachineProfile.SecurityProfile == nil {
		return nil
	}
	return s.Properties.VirtualMachineProfile.SecurityProfile.ProxyAgentSettings
}

// ScaleSetInstance is the subset of a Uniform scale-set instance this package
// reads.
type ScaleSetInstance struct {
	ID         string                      `json:"id,omitempty"`
	Name       string                      `json:"name,omitempty"`
	InstanceID string                      `json:"instanceId,omitempty"`
	Location   string                      `json:"location,omitempty"`
	ETag       *azcore.ETag                `json:"etag,omitempty"`
	Properties *ScaleSetInstanceProperties `json:"properties,omitempty"`
}

// ScaleSetInstanceProperties is the subset of an instance's properties this
// package reads.
type ScaleSetInstanceProperties struct {
	ProvisioningState  *string          `json:"provisioningState,omitempty"`
	LatestModelApplied *bool            `json:"latestModelApplied,omitempty"`
	SecurityProfile    *SecurityProfile `json:"securityProfile,omitempty"`
	StorageProfile     *StorageProfile  `json:"storageProfile,omitempty"`
}

// ProxyAgentSettings returns the instance's settings, or nil.
func (i *ScaleSetInstance) ProxyAgentSettings() *ProxyAgentSettings {
	if i == nil || i.Properties == nil || i.Properties.SecurityProfile == nil {
		return nil
	}
	return i.Properties.SecurityProfile.ProxyAgentSettings
}

// Profile is a gallery inVMAccessControlProfile. A Profile decoded from the
// service (GetProfile, the list pager, a poller's result) remembers the JSON
// it came from: writing it back with BeginCreateOrUpdateProfile keeps the
// fields this package does not model and changes only what the caller
// changed. Compare Profiles with their exported fields (go-cmp needs
// cmpopts.IgnoreUnexported).
type Profile struct {
	ID         string             `json:"id,omitempty"`
	Name       string             `json:"name,omitempty"`
	Type       string             `json:"type,omitempty"`
	Location   string             `json:"location"`
	Tags       map[string]string  `json:"tags,omitempty"`
	Properties *ProfileProperties `json:"properties,omitempty"`

	// raw is the JSON the profile was read from, so that a write keeps
	// the fields this package does not model.
	raw []byte
}

// UnmarshalJSON decodes the profile and keeps the JSON for a later write.
func (p *Profile) UnmarshalJSON(b []byte) error {
	type plain Profile
	var v plain
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Profile(v)
	p.raw = bytes.Clone(b)
	return nil
}

// ProfileProperties are a profile's properties.
type ProfileProperties struct {
	OSType                 OSType       `json:"osType"`
	ApplicableHostEndpoint HostEndpoint `json:"applicableHostEndpoint"`
	Description            *string      `json:"description,omitempty"`
	// ProvisioningState is read-only.
	ProvisioningState *string `json:"provisioningState,omitempty"`
}

// ProfileVersion is a version of a gallery inVMAccessControlProfile: the
// rule set a VM endpoint can link. Like Profile, a version decoded from the
// service remembers its JSON, so a read-modify-write keeps fields this
// package does not model (TargetRegion encryption, additionalReplicaSets,
// fields of later API versions).
type ProfileVersion struct {
	ID         string                    `json:"id,omitempty"`
	Name       string                    `json:"name,omitempty"`
	Type       string                    `json:"type,omitempty"`
	Location   string                    `json:"location"`
	Tags       map[string]string         `json:"tags,omitempty"`
	Properties *ProfileVersionProperties `json:"properties,omitempty"`

	// raw is the JSON the version was read from, so that a write keeps
	// the fields this package does not model (TargetRegion.encryption,
	// additionalReplicaSets, ...).
	raw []byte
}

// UnmarshalJSON decodes the version and keeps the JSON for a later write.
func (v *ProfileVersion) UnmarshalJSON(b []byte) error {
	type plain ProfileVersion
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*v = ProfileVersion(p)
	v.raw = bytes.Clone(b)
	return nil
}

// ProfileVersionProperties are a version's properties.
type ProfileVersionProperties struct {
	Mode          Mode          `json:"mode"`
	DefaultAccess DefaultAccess `json:"defaultAccess"`
	// Rules uses msp's model; it marshals all four lists, as the service
	// requires when rules are given.
	Rules             *msp.AccessControlRules `json:"rules,omitempty"`
	TargetLocations   []TargetRegion          `json:"targetLocations,omitempty"`
	ExcludeFromLatest *bool                   `json:"excludeFromLatest,omitempty"`
	// PublishedDate, ProvisioningState and ReplicationStatus are read-only.
	PublishedDate     *time.Time         `json:"publishedDate,omitempty"`
	ProvisioningState *string            `json:"provisioningState,omitempty"`
	ReplicationStatus *ReplicationStatus `json:"replicationStatus,omitempty"`
}

// TargetRegion is a region a version replicates to.
type TargetRegion struct {
	Name                 string  `json:"name"`
	RegionalReplicaCount *int32  `json:"regionalReplicaCount,omitempty"`
	StorageAccountType   *string `json:"storageAccountType,omitempty"`
	ExcludeFromLatest    *bool   `json:"excludeFromLatest,omitempty"`
}

// ReplicationStatus reports replication of a version.
type ReplicationStatus struct {
	AggregatedState *string                     `json:"aggregatedState,omitempty"`
	Summary         []RegionalReplicationStatus `json:"summary,omitempty"`
}

// RegionalReplicationStatus is replication in one region.
type RegionalReplicationStatus struct {
	Region   *string `json:"region,omitempty"`
	State    *string `json:"state,omitempty"`
	Details  *string `json:"details,omitempty"`
	Progress *int32  `json:"progress,omitempty"`
}

// sameRegion compares ARM region names the way ARM does: case- and
// space-insensitively ("West US" == "westus").
func sameRegion(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, " ", "")) }
	return norm(a) == norm(b)
}
