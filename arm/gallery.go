package arm

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// ProfileResponse is the result of a profile read or write.
type ProfileResponse struct {
	Profile
}

// ProfileVersionResponse is the result of a version read or write.
type ProfileVersionResponse struct {
	ProfileVersion
}

// DeleteResponse is the (empty) result of a delete.
type DeleteResponse struct{}

// ProfileListResponse is one page of profiles.
type ProfileListResponse struct {
	Value    []Profile `json:"value"`
	NextLink *string   `json:"nextLink,omitempty"`
}

// ProfileVersionListResponse is one page of versions.
type ProfileVersionListResponse struct {
	Value    []ProfileVersion `json:"value"`
	NextLink *string          `json:"nextLink,omitempty"`
}

func (c *Client) profilePath(rg, gallery string, profile ...string) (string, error) {
	pairs := []string{"galleries", gallery}
	if len(profile) > 0 {
		pairs = append(pairs, "inVMAccessControlProfiles", profile[0])
	}
	if len(profile) > 1 {
		pairs = append(pairs, "versions", profile[1])
	}
	return c.resourcePath(rg, pairs...)
}

// GetProfile reads a gallery inVMAccessControlProfile.
func (c *Client) GetProfile(ctx context.Context, resourceGroup, gallery, profile string, _ *ClientGetProfileOptions) (ProfileResponse, error) {
	var out ProfileResponse
	path, err := c.profilePath(resourceGroup, gallery, profile)
	if err != nil {
		return out, err
	}
	_, err = c.call(ctx, "Client.GetProfile", http.MethodGet, path, c.galleryAPI, nil, nil, &out.Profile, http.StatusOK)
	return out, err
}

// Validate checks a profile before it is written.
func (p *Profile) Validate() error {
	switch {
	case strings.TrimSpace(p.Location) == "":
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "location", "empty", "set the gallery's region")
	case p.Properties == nil:
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "properties", "missing", "set osType and applicableHostEndpoint")
	case p.Properties.OSType != OSLinux && p.Properties.OSType != OSWindows:
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "properties.osType", fmt.Sprintf("%q", p.Properties.OSType), "use Linux or Windows")
	case p.Properties.ApplicableHostEndpoint != EndpointWireServer && p.Properties.ApplicableHostEndpoint != EndpointIMDS:
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "properties.applicableHostEndpoint",
			fmt.Sprintf("%q", p.Properties.ApplicableHostEndpoint), "use WireServer or IMDS")
	}
	return nil
}

// writable returns a copy without the read-only fields, so a profile read
// with GetProfile can be changed and written back.
func (p Profile) writable() Profile {
	out := Profile{Location: p.Location, Tags: p.Tags}
	if p.Properties != nil {
		props := *p.Properties
		props.ProvisioningState = nil
		out.Properties = &props
	}
	return out
}

// BeginCreateOrUpdateProfile PUTs a gallery inVMAccessControlProfile.
func (c *Client) BeginCreateOrUpdateProfile(ctx context.Context, resourceGroup, gallery, name string, profile Profile, options *ClientBeginCreateOrUpdateProfileOptions) (*runtime.Poller[ProfileResponse], error) {
	const api = "Client.BeginCreateOrUpdateProfile"
	return begin[ProfileResponse](ctx, c, api, optional(options).ResumeToken, func(ctx context.Context) (*http.Response, error) {
		path, err := c.profilePath(resourceGroup, gallery, name)
		if err != nil {
			return nil, err
		}
		if err := profile.Validate(); err != nil {
			return nil, err
		}
		body, err := putBody(profile.raw, profile.writable())
		if err != nil {
			return nil, err
		}
		return c.startLRO(ctx, api, http.MethodPut, path, c.galleryAPI, body, nil, http.StatusOK, http.StatusCreated, http.StatusAccepted)
	})
}

// BeginDeleteProfile deletes a gallery inVMAccessControlProfile.
func (c *Client) BeginDeleteProfile(ctx context.Context, resourceGroup, gallery, name string, options *ClientBeginDeleteProfileOptions) (*runtime.Poller[DeleteResponse], error) {
	const api = "Client.BeginDeleteProfile"
	return begin[DeleteResponse](ctx, c, api, optional(options).ResumeToken, func(ctx context.Context) (*http.Response, error) {
		path, err := c.profilePath(resourceGroup, gallery, name)
		if err != nil {
			return nil, err
		}
		return c.startLRO(ctx, api, http.MethodDelete, path, c.galleryAPI, nil, nil, http.StatusOK, http.StatusAccepted, http.StatusNoContent)
	})
}

// NewListProfilesPager lists the profiles of a gallery.
func (c *Client) NewListProfilesPager(resourceGroup, gallery string, _ *ClientListProfilesOptions) *runtime.Pager[ProfileListResponse] {
	return newPager[ProfileListResponse](c, "Client.NewListProfilesPager", c.galleryAPI, func() (string, error) {
		p, err := c.profilePath(resourceGroup, gallery)
		return p + "/inVMAccessControlProfiles", err
	}, func(r ProfileListResponse) *string { return r.NextLink })
}

// GetProfileVersion reads a profile version.
func (c *Client) GetProfileVersion(ctx context.Context, resourceGroup, gallery, profile, version string, _ *ClientGetProfileVersionOptions) (ProfileVersionResponse, error) {
	var out ProfileVersionResponse
	path, err := c.profilePath(resourceGroup, gallery, profile, version)
	if err != nil {
		return out, err
	}
	_, err = c.call(ctx, "Client.GetProfileVersion", http.MethodGet, path, c.galleryAPI, nil, nil, &out.ProfileVersion, http.StatusOK)
	return out, err
}

// Validate checks a version before it is written: location, mode, default
// access and, when present, the rules (msp's validation).
func (v *ProfileVersion) Validate() error {
	switch {
	case strings.TrimSpace(v.Location) == "":
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "location", "empty", "set the gallery's region")
	case v.Properties == nil:
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "properties", "missing", "set mode and defaultAccess")
	case !v.Properties.Mode.valid():
		return clientError(CodeBadRequest, ErrInvalidMode, "properties.mode", fmt.Sprintf("%q", v.Properties.Mode), actionInvalidMode)
	case v.Properties.DefaultAccess != AccessAllow && v.Properties.DefaultAccess != AccessDeny:
		return clientError(CodeInvalidParameter, ErrInvalidRequest, "properties.defaultAccess",
			fmt.Sprintf("%q", v.Properties.DefaultAccess), "use Allow or Deny")
	}
	if v.Properties.Rules != nil {
		if err := v.Properties.Rules.Validate(); err != nil {
			e := clientError(CodeInvalidParameter, ErrInvalidRequest, "properties.rules", err.Error(), "fix the rules; every reference must name a defined privilege, role or identity")
			e.Err = err
			return e
		}
	}
	return nil
}

func (v ProfileVersion) writable() ProfileVersion {
	out := ProfileVersion{Location: v.Location, Tags: v.Tags}
	if v.Properties != nil {
		props := *v.Properties
		props.PublishedDate, props.ProvisioningState, props.ReplicationStatus = nil, nil, nil
		out.Properties = &props
	}
	return out
}

// BeginCreateOrUpdateProfileVersion PUTs a profile version. Replication to
// TargetLocations continues after the poller finishes; a VM can link the
// version only once it reached the VM's region.
func (c *Client) BeginCreateOrUpdateProfileVersion(ctx context.Context, resourceGroup, gallery, profile, version string, v ProfileVersion, options *ClientBeginCreateOrUpdateProfileVersionOptions) (*runtime.Poller[ProfileVersionResponse], error) {
	const api = "Client.BeginCreateOrUpdateProfileVersion"
	return begin[ProfileVersionResponse](ctx, c, api, optional(options).ResumeToken, func(ctx context.Context) (*http.Response, error) {
		path, err := c.profilePath(resourceGroup, gallery, profile, version)
		if err != nil {
			return nil, err
		}
		if err := v.Validate(); err != nil {
			return nil, err
		}
		body, err := putBody(v.raw, v.writable())
		if err != nil {
			return nil, err
		}
		return c.startLRO(ctx, api, http.MethodPut, path, c.galleryAPI, body, nil, http.StatusOK, http.StatusCreated, http.StatusAccepted)
	})
}

// BeginDeleteProfileVersion deletes a profile version.
func (c *Client) BeginDeleteProfileVersion(ctx context.Context, resourceGroup, gallery, profile, version string, options *ClientBeginDeleteProfileVersionOptions) (*runtime.Poller[DeleteResponse], error) {
	const api = "Client.BeginDeleteProfileVersion"
	return begin[DeleteResponse](ctx, c, api, optional(options).ResumeToken, func(ctx context.Context) (*http.Response, error) {
		path, err := c.profilePath(resourceGroup, gallery, profile, version)
		if err != nil {
			return nil, err
		}
		return c.startLRO(ctx, api, http.MethodDelete, path, c.galleryAPI, nil, nil, http.StatusOK, http.StatusAccepted, http.StatusNoContent)
	})
}

// NewListProfileVersionsPager lists the versions of a profile.
func (c *Client) NewListProfileVersionsPager(resourceGroup, gallery, profile string, _ *ClientListProfileVersionsOptions) *runtime.Pager[ProfileVersionListResponse] {
	return newPager[ProfileVersionListResponse](c, "Client.NewListProfileVersionsPager", c.galleryAPI, func() (string, error) {
		p, err := c.profilePath(resourceGroup, gallery, profile)
		return p + "/versions", err
	}, func(r ProfileVersionListResponse) *string { return r.NextLink })
}

func newPager[T any](c *Client, api, apiVersion string, path func() (string, error), next func(T) *string) *runtime.Pager[T] {
	return runtime.NewPager(runtime.PagingHandler[T]{
		More: func(page T) bool {
			n := next(page)
			return n != nil && *n != ""
		},
		Fetcher: func(ctx context.Context, page *T) (T, error) {
			var out T
			ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, api)
			if page == nil {
				p, err := path()
				if err != nil {
					return out, err
				}
				_, err = c.call(ctx, api, http.MethodGet, p, apiVersion, nil, nil, &out, http.StatusOK)
				return out, err
			}
			link := next(*page)
			r, err := runtime.NewRequestForNextLink(ctx, http.MethodGet, c.internal.Endpoint(), *link)
			if err != nil {
				return out, err
			}
			resp, err := c.send(ctx, api, r, http.StatusOK)
			if err != nil {
				return out, err
			}
			if err := runtime.UnmarshalAsJSON(resp, &out); err != nil {
				return out, fmt.Errorf("arm: %s: decode page: %w", api, err)
			}
			return out, nil
		},
		Tracer: c.internal.Tracer(),
	})
}
