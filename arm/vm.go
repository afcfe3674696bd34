package arm

import (
	"context"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// VirtualMachineResponse is the result of a VM read or update.
type VirtualMachineResponse struct {
	VirtualMachine
}

// GetVirtualMachine reads a VM.
func (c *Client) GetVirtualMachine(ctx context.Context, resourceGroup, name string, _ *ClientGetVirtualMachineOptions) (VirtualMachineResponse, error) {
	var out VirtualMachineResponse
	path, err := c.resourcePath(resourceGroup, "virtualMachines", name)
	if err != nil {
		return out, err
	}
	_, err = c.call(ctx, "Client.GetVirtualMachine", http.MethodGet, path, c.computeAPI, nil, nil, &out.VirtualMachine, http.StatusOK)
	return out, err
}

type vmPatch struct {
	Properties struct {
		SecurityProfile SecurityProfile `json:"securityProfile"`
	} `json:"properties"`
}

// BeginUpdateVirtualMachineSettings PATCHes only the non-nil fields of
// change into the VM's proxyAgentSettings; endpoints and fields left nil are
// untouched. Switching an endpoint between inline mode and a linked profile
// is done by sending only the new one (InlineMode, LinkedProfile): the
// service drops the other, and the client never sends both.
func (c *Client) BeginUpdateVirtualMachineSettings(ctx context.Context, resourceGroup, name string, change ProxyAgentSettings, options *ClientBeginUpdateVirtualMachineSettingsOptions) (*runtime.Poller[VirtualMachineResponse], error) {
	oo := optional(options)
	o := updateOptions{resumeToken: oo.ResumeToken, ifMatch: oo.IfMatch, checkProfiles: oo.CheckProfiles, disableClientValidation: oo.DisableClientValidation}
	return begin[VirtualMachineResponse](ctx, c, "Client.BeginUpdateVirtualMachineSettings", o.resumeToken, func(ctx context.Context) (*http.Response, error) {
		path, err := c.resourcePath(resourceGroup, "virtualMachines", name)
		if err != nil {
			return nil, err
		}
		ifMatch, err := c.checkUpdate(ctx, "securityProfile.proxyAgentSettings", &change, &o, func(ctx context.Context) (resourceState, error) {
			vm, err := c.GetVirtualMachine(ctx, resourceGroup, name, nil)
			if err != nil {
				return resourceState{}, err
			}
			st := resourceState{settings: vm.ProxyAgentSettings(), location: vm.Location, etag: deref(vm.ETag)}
			if p := vm.Properties; p != nil && p.StorageProfile != nil && p.StorageProfile.OSDisk != nil {
				st.osType = deref(p.StorageProfile.OSDisk.OSType)
			}
			return st, nil
		})
		if err != nil {
			return nil, err
		}
		var body vmPatch
		body.Properties.SecurityProfile.ProxyAgentSettings = &change
		return c.startLRO(ctx, "Client.BeginUpdateVirtualMachineSettings", http.MethodPatch, path, c.computeAPI, body, &requestOptions{ifMatch: ifMatch}, http.StatusOK, http.StatusAccepted)
	})
}

// resourceState is what checkUpdate checks a change against: the current
// settings, OS disk, region and etag of the VM or scale-set model.
type resourceState struct {
	settings *ProxyAgentSettings
	osType   OSType
	location string
	etag     azcore.ETag
}

// checkUpdate refuses a change the service would refuse. A key change, or
// CheckProfiles, also needs the current resource, which read returns; its
// etag then makes the update conditional unless the caller set IfMatch.
// It returns the etag to send in If-Match, empty for none.
func (c *Client) checkUpdate(ctx context.Context, target string, change *ProxyAgentSettings, o *updateOptions, read func(context.Context) (resourceState, error)) (azcore.ETag, error) {
	var ifMatch azcore.ETag
	if o.ifMatch != nil {
		ifMatch = *o.ifMatch
	}
	if o.disableClientValidation {
		return ifMatch, nil
	}
	if err := change.validate(target, c.computeAPI); err != nil {
		return "", err
	}
	if change.KeyIncarnationID == nil && !o.checkProfiles {
		return ifMatch, nil
	}
	cur, err := read(ctx)
	if err != nil {
		return "", err
	}
	facts, err := c.profileFacts(ctx, change, o.checkProfiles)
	if err != nil {
		return "", err
	}
	if err := checkAgainst(target, change, cur.settings, cur.osType, cur.location, facts); err != nil {
		return "", err
	}
	if o.ifMatch == nil {
		ifMatch = cur.etag
	}
	return ifMatch, nil
}

// profileFacts fetches the profile and version behind every linked endpoint
// of change. A missing version is recorded, not an error, so that the caller
// reports it with the service's code.
func (c *Client) profileFacts(ctx context.Context, change *ProxyAgentSettings, enabled bool) (map[string]profileFacts, error) {
	if !enabled {
		return nil, nil
	}
	facts := map[string]profileFacts{}
	for slot, e := range map[string]*HostEndpointSettings{"wireServer": change.WireServer, "imds": change.IMDS} {
		if e == nil || e.InVMAccessControlProfileReferenceID == nil {
			continue
		}
		ref, err := ParseProfileVersionID(*e.InVMAccessControlProfileReferenceID)
		if err != nil {
			return nil, err
		}
		pc := c.inSubscription(ref.SubscriptionID)
		var f profileFacts
		v, err := pc.GetProfileVersion(ctx, ref.ResourceGroup, ref.Gallery, ref.Profile, ref.Version, nil)
		switch {
		case isNotFound(err):
		case err != nil:
			return nil, err
		default:
			f.version = &v.ProfileVersion
		}
		p, err := pc.GetProfile(ctx, ref.ResourceGroup, ref.Gallery, ref.Profile, nil)
		switch {
		case isNotFound(err):
		case err != nil:
			return nil, err
		default:
			f.profile = &p.Profile
		}
		facts[slot] = f
	}
	return facts, nil
}

// inSubscription returns a client for another subscription sharing this
// client's pipeline, because a gallery may live elsewhere.
func (c *Client) inSubscription(sub string) *Client {
	if sub == c.sub {
		return c
	}
	cc := *c
	cc.sub = sub
	return &cc
}

// ScaleSetResponse is the result of a scale-set read or update.
type ScaleSetResponse struct {
	ScaleSet
}

// NeedsManualUpgrade reports whether model changes reach instances only
// through BeginManualUpgrade.
func (s *ScaleSet) NeedsManualUpgrade() bool {
	return s.Properties != nil && s.Properties.UpgradePolicy != nil && strings.EqualFold(deref(s.Properties.UpgradePolicy.Mode), "Manual")
}

// GetScaleSet reads a scale set.
func (c *Client) GetScaleSet(ctx context.Context, resourceGroup, name string, _ *ClientGetScaleSetOptions) (ScaleSetResponse, error) {
	var out ScaleSetResponse
	path, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", name)
	if err != nil {
		return out, err
	}
	_, err = c.call(ctx, "Client.GetScaleSet", http.MethodGet, path, c.computeAPI, nil, nil, &out.ScaleSet, http.StatusOK)
	return out, err
}

type vmssPatch struct {
	Properties struct {
		VirtualMachineProfile struct {
			SecurityProfile SecurityProfile `json:"securityProfile"`
		} `json:"virtualMachineProfile"`
	} `json:"properties"`
}

// BeginUpdateScaleSetSettings PATCHes change into the scale-set model, like
// BeginUpdateVirtualMachineSettings. The model reaches instances according to
// the upgrade policy; with Manual, call BeginManualUpgrade afterwards. Key
// resets are per instance: use BeginResetScaleSetInstanceKey.
func (c *Client) BeginUpdateScaleSetSettings(ctx context.Context, resourceGroup, name string, change ProxyAgentSettings, options *ClientBeginUpdateScaleSetSettingsOptions) (*runtime.Poller[ScaleSetResponse], error) {
	oo := optional(options)
	o := updateOptions{resumeToken: oo.ResumeToken, ifMatch: oo.IfMatch, checkProfiles: oo.CheckProfiles, disableClientValidation: oo.DisableClientValidation}
	return begin[ScaleSetResponse](ctx, c, "Client.BeginUpdateScaleSetSettings", o.resumeToken, func(ctx context.Context) (*http.Response, error) {
		path, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", name)
		if err != nil {
			return nil, err
		}
		ifMatch, err := c.checkUpdate(ctx, "virtualMachineProfile.securityProfile.proxyAgentSettings", &change, &o, func(ctx context.Context) (resourceState, error) {
			ss, err := c.GetScaleSet(ctx, resourceGroup, name, nil)
			if err != nil {
				return resourceState{}, err
			}
			st := resourceState{settings: ss.ProxyAgentSettings(), location: ss.Location, etag: deref(ss.ETag)}
			if p := ss.Properties; p != nil && p.VirtualMachineProfile != nil && p.VirtualMachineProfile.StorageProfile != nil &&
				p.VirtualMachineProfile.StorageProfile.OSDisk != nil {
				st.osType = deref(p.VirtualMachineProfile.StorageProfile.OSDisk.OSType)
			}
			return st, nil
		})
		if err != nil {
			return nil, err
		}
		var body vmssPatch
		body.Properties.VirtualMachineProfile.SecurityProfile.ProxyAgentSettings = &change
		return c.startLRO(ctx, "Client.BeginUpdateScaleSetSettings", http.MethodPatch, path, c.computeAPI, body, &requestOptions{ifMatch: ifMatch}, http.StatusOK, http.StatusAccepted)
	})
}

// ManualUpgradeResponse is the (empty) result of BeginManualUpgrade.
type ManualUpgradeResponse struct{}

// BeginManualUpgrade brings the given instances to the latest scale-set
// model; needed after a model change when the upgrade policy is Manual.
func (c *Client) BeginManualUpgrade(ctx context.Context, resourceGroup, name string, instanceIDs []string, options *ClientBeginManualUpgradeOptions) (*runtime.Poller[ManualUpgradeResponse], error) {
	return begin[ManualUpgradeResponse](ctx, c, "Client.BeginManualUpgrade", optional(options).ResumeToken, func(ctx context.Context) (*http.Response, error) {
		if len(instanceIDs) == 0 {
			return nil, clientError(CodeBadRequest, ErrInvalidRequest, "instanceIds", "no instances", "name at least one instance id")
		}
		path, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", name)
		if err != nil {
			return nil, err
		}
		path += "/manualupgrade"
		body := struct {
			InstanceIDs []string `json:"instanceIds"`
		}{instanceIDs}
		return c.startLRO(ctx, "Client.BeginManualUpgrade", http.MethodPost, path, c.computeAPI, body, nil, http.StatusOK, http.StatusAccepted)
	})
}

// ScaleSetInstanceResponse is the result of an instance read or update.
type ScaleSetInstanceResponse struct {
	ScaleSetInstance
}

// GetScaleSetInstance reads one instance of a Uniform scale set.
func (c *Client) GetScaleSetInstance(ctx context.Context, resourceGroup, scaleSet, instanceID string, _ *ClientGetScaleSetInstanceOptions) (ScaleSetInstanceResponse, error) {
	var out ScaleSetInstanceResponse
	path, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", scaleSet, "virtualMachines", instanceID)
	if err != nil {
		return out, err
	}
	_, err = c.call(ctx, "Client.GetScaleSetInstance", http.MethodGet, path, c.computeAPI, nil, nil, &out.ScaleSetInstance, http.StatusOK)
	return out, err
}

// ScaleSetInstanceListResponse is one page of scale-set instances.
type ScaleSetInstanceListResponse struct {
	Value    []ScaleSetInstance `json:"value"`
	NextLink *string            `json:"nextLink,omitempty"`
}

// NewListScaleSetInstancesPager lists the instances of a Uniform scale set,
// for example to reset the key of each: key resets are per instance.
func (c *Client) NewListScaleSetInstancesPager(resourceGroup, scaleSet string, _ *ClientListScaleSetInstancesOptions) *runtime.Pager[ScaleSetInstanceListResponse] {
	return newPager[ScaleSetInstanceListResponse](c, "Client.NewListScaleSetInstancesPager", c.computeAPI, func() (string, error) {
		p, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", scaleSet)
		return p + "/virtualMachines", err
	}, func(r ScaleSetInstanceListResponse) *string { return r.NextLink })
}
