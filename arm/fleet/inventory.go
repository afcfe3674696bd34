package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resourcegraph/armresourcegraph"

	"github.com/metadatasec/gpa/arm"
)

// DefaultPageSize is the rows per Resource Graph page, the service's maximum.
const DefaultPageSize = 1000

// ErrStop, returned by an Inventory callback, ends the inventory early
// without an error.
var ErrStop = errors.New("fleet: stop")

// InventoryOptions are the options of Inventory; nil is fine.
type InventoryOptions struct {
	// PageSize is the rows per page, 1 to 1000; DefaultPageSize when 0.
	PageSize int
}

// InventoryResponse says what an inventory read.
type InventoryResponse struct {
	// Rows is the number of resources passed to the callback.
	Rows int
	// Pages is the number of Resource Graph pages read.
	Pages int
	// TotalRecords is what the service reported for the query.
	TotalRecords int64
}

// Inventory runs the selection's query and calls fn for every resource, one
// page at a time: no more than a page of rows is held at once, whatever the
// size of the fleet. Rows that fail Selection.Tags are skipped. An error
// from fn ends the inventory and is returned, except ErrStop.
func (c *Client) Inventory(ctx context.Context, sel Selection, fn func(Resource) error, options *InventoryOptions) (InventoryResponse, error) {
	var out InventoryResponse
	top := int32(DefaultPageSize)
	if options != nil && options.PageSize != 0 {
		if options.PageSize < 1 || options.PageSize > 1000 {
			return out, fmt.Errorf("fleet: page size %d outside 1..1000", options.PageSize)
		}
		top = int32(options.PageSize)
	}
	req := armresourcegraph.QueryRequest{
		Query:   to.Ptr(sel.Query()),
		Options: &armresourcegraph.QueryRequestOptions{Top: &top, ResultFormat: to.Ptr(armresourcegraph.ResultFormatObjectArray)},
	}
	for _, s := range sel.Subscriptions {
		req.Subscriptions = append(req.Subscriptions, to.Ptr(s))
	}
	for _, g := range sel.ManagementGroups {
		req.ManagementGroups = append(req.ManagementGroups, to.Ptr(g))
	}
	for {
		resp, err := c.graph.Resources(ctx, req, nil)
		if err != nil {
			return out, fmt.Errorf("fleet: resource graph page %d: %w", out.Pages+1, err)
		}
		out.Pages++
		if resp.TotalRecords != nil {
			out.TotalRecords = *resp.TotalRecords
		}
		rows, ok := resp.Data.([]any)
		if !ok && resp.Data != nil {
			return out, fmt.Errorf("fleet: resource graph page %d: data is %T, not an object array", out.Pages, resp.Data)
		}
		for _, row := range rows {
			r, err := resourceFromRow(row)
			if err != nil {
				return out, err
			}
			if !sel.matchTags(r.Tags) {
				continue
			}
			out.Rows++
			if err := fn(r); err != nil {
				if errors.Is(err, ErrStop) {
					return out, nil
				}
				return out, err
			}
		}
		if resp.SkipToken == nil || *resp.SkipToken == "" {
			return out, nil
		}
		req.Options.SkipToken = resp.SkipToken
	}
}

// Summary counts an inventory as it streams by.
type Summary struct {
	// Total counts resources by kind.
	Total map[Kind]int `json:"total"`
	// WithoutMSP counts resources whose proxyAgentSettings are absent or
	// not enabled.
	WithoutMSP int `json:"withoutMsp"`
	// Modes counts enabled resources by endpoint ("wireServer", "imds")
	// and state (Audit, Enforce, Disabled, "profile", "-" for unset).
	Modes map[string]map[string]int `json:"modes"`
	// ProfileVersions counts linked references by profile/version.
	ProfileVersions map[string]int `json:"profileVersions"`
	// UnsupportedImage counts enabled resources on an image MSP does not
	// support.
	UnsupportedImage int `json:"unsupportedImage"`
	// UnknownImage counts enabled resources on an image the documentation
	// does not name.
	UnknownImage int `json:"unknownImage"`
}

// NewSummary returns an empty summary.
func NewSummary() *Summary {
	return &Summary{
		Total:           map[Kind]int{},
		Modes:           map[string]map[string]int{"wireServer": {}, "imds": {}},
		ProfileVersions: map[string]int{},
	}
}

// Add counts r.
func (s *Summary) Add(r Resource) {
	s.Total[r.Kind]++
	if !r.Enabled() {
		s.WithoutMSP++
		return
	}
	switch r.ImageSupport {
	case ImageUnsupported:
		s.UnsupportedImage++
	case ImageUnknown:
		s.UnknownImage++
	}
	for _, ep := range []struct {
		name string
		e    *arm.HostEndpointSettings
	}{{"wireServer", r.Settings.WireServer}, {"imds", r.Settings.IMDS}} {
		st, ref := EndpointState(ep.e)
		s.Modes[ep.name][st]++
		if ref != "" {
			s.ProfileVersions[ShortProfile(ref)]++
		}
	}
}

// ShortProfile shortens a profile version id to profile/version.
func ShortProfile(ref string) string {
	if v, err := arm.ParseProfileVersionID(ref); err == nil {
		return v.Profile + "/" + v.Version
	}
	return ref
}

// Lines renders the summary as the lines msp-fleet prints, in a stable
// order.
func (s *Summary) Lines() []string {
	total := 0
	for _, n := range s.Total {
		total += n
	}
	lines := []string{fmt.Sprintf("resources: %d (vm %d, vmss %d, vmss-instance %d)",
		total, s.Total[KindVM], s.Total[KindScaleSet], s.Total[KindInstance])}
	lines = append(lines, fmt.Sprintf("without MSP: %d", s.WithoutMSP))
	for _, ep := range []string{"wireServer", "imds"} {
		var parts []string
		for _, st := range slices.Sorted(maps.Keys(s.Modes[ep])) {
			parts = append(parts, fmt.Sprintf("%s %d", st, s.Modes[ep][st]))
		}
		lines = append(lines, fmt.Sprintf("%s: %s", ep, orNone(strings.Join(parts, ", "))))
	}
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(s.ProfileVersions)) {
		parts = append(parts, fmt.Sprintf("%s %d", p, s.ProfileVersions[p]))
	}
	lines = append(lines, "profile versions: "+orNone(strings.Join(parts, ", ")))
	lines = append(lines, fmt.Sprintf("MSP on an unsupported image: %d (on an image not in the documentation: %d)", s.UnsupportedImage, s.UnknownImage))
	return lines
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
