package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/metadatasec/gpa/arm"
)

// ErrInvalidWant marks a desired-state file the package refuses.
var ErrInvalidWant = errors.New("fleet: invalid desired state")

// Want is a desired state: proxyAgentSettings in ARM's JSON shape, and
// optionally which resources it is for.
//
//	{"proxyAgentSettings": {"enabled": true,
//	   "wireServer": {"mode": "Enforce"},
//	   "imds": {"inVMAccessControlProfileReferenceId": "/subscriptions/…/versions/1.0.0"}},
//	 "tags": {"env": "prod"},
//	 "where": "location =~ 'eastus'"}
type Want struct {
	// Settings is what each selected resource should have. Fields left out
	// are not compared and never written. keyIncarnationId is refused: key
	// resets are ResetKeys' business.
	Settings arm.ProxyAgentSettings `json:"proxyAgentSettings"`
	// Tags narrows the selection, as Selection.Tags.
	Tags map[string]string `json:"tags,omitempty"`
	// Where narrows the selection with a KQL predicate, ANDed with the
	// caller's.
	Where string `json:"where,omitempty"`
}

// ReadWant decodes and checks a desired state; unknown fields are refused,
// so a typo cannot silently mean "leave unchanged".
func ReadWant(r io.Reader) (Want, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var w Want
	if err := dec.Decode(&w); err != nil {
		return Want{}, fmt.Errorf("%w: %w", ErrInvalidWant, err)
	}
	return w, w.Validate()
}

// Validate refuses a desired state the service would refuse or that this
// package will not write: an endpoint with both a mode and a reference, an
// invalid mode or reference, the deprecated top-level mode, a
// keyIncarnationId, or nothing at all. The error wraps arm's *Error when arm
// found the problem.
func (w Want) Validate() error {
	if w.Settings.KeyIncarnationID != nil {
		return fmt.Errorf("%w: keyIncarnationId cannot be a desired state; use reset-keys", ErrInvalidWant)
	}
	if err := w.Settings.Validate(""); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidWant, err)
	}
	return nil
}

// Selection narrows sel by the desired state's tags and where clause.
func (w Want) Selection(sel Selection) Selection {
	if len(w.Tags) > 0 {
		tags := make(map[string]string, len(sel.Tags)+len(w.Tags))
		for k, v := range sel.Tags {
			tags[k] = v
		}
		for k, v := range w.Tags {
			tags[k] = v
		}
		sel.Tags = tags
	}
	if w.Where != "" {
		if sel.Where != "" {
			sel.Where = "(" + sel.Where + ") and (" + w.Where + ")"
		} else {
			sel.Where = w.Where
		}
	}
	return sel
}

// Difference is one field that differs from the desired state.
type Difference struct {
	// Field is the JSON path below proxyAgentSettings.
	Field string `json:"field"`
	Have  string `json:"have"`
	Want  string `json:"want"`
}

// String renders "field: have -> want".
func (d Difference) String() string { return d.Field + ": " + d.Have + " -> " + d.Want }

// Drift is how a resource differs from the desired state.
type Drift struct {
	Differences []Difference
	// Change is the minimal PATCH of proxyAgentSettings that removes the
	// drift; nil when there is none. An endpoint in it carries a mode or a
	// reference, never both: switching sends only the new one and the
	// service drops the other.
	Change *arm.ProxyAgentSettings
}

// Diff compares current settings (nil for none) with the desired state.
func (w Want) Diff(current *arm.ProxyAgentSettings) Drift {
	var d Drift
	cur := current
	if cur == nil {
		cur = &arm.ProxyAgentSettings{}
	}
	change := &arm.ProxyAgentSettings{}
	changed := false
	if b, ok := diffBool("enabled", w.Settings.Enabled, cur.Enabled, &d); ok {
		change.Enabled, changed = b, true
	}
	if b, ok := diffBool("addProxyAgentExtension", w.Settings.AddProxyAgentExtension, cur.AddProxyAgentExtension, &d); ok {
		change.AddProxyAgentExtension, changed = b, true
	}
	if e := diffEndpoint("wireServer", w.Settings.WireServer, cur.WireServer, &d); e != nil {
		change.WireServer, changed = e, true
	}
	if e := diffEndpoint("imds", w.Settings.IMDS, cur.IMDS, &d); e != nil {
		change.IMDS, changed = e, true
	}
	if changed {
		d.Change = change
	}
	return d
}

func diffBool(field string, want, have *bool, d *Drift) (*bool, bool) {
	if want == nil {
		return nil, false
	}
	h := have != nil && *have
	if h == *want {
		return nil, false
	}
	d.Differences = append(d.Differences, Difference{field, fmt.Sprint(h), fmt.Sprint(*want)})
	v := *want
	return &v, true
}

func diffEndpoint(name string, want, have *arm.HostEndpointSettings, d *Drift) *arm.HostEndpointSettings {
	if want == nil {
		return nil
	}
	hs, href := EndpointState(have)
	if hs == "profile" {
		hs = href
	}
	var out arm.HostEndpointSettings
	changed := false
	switch {
	case want.Mode != nil:
		if hs != string(*want.Mode) {
			d.Differences = append(d.Differences, Difference{name, shortState(hs), string(*want.Mode)})
			m := *want.Mode
			out.Mode, changed = &m, true
		}
	case want.InVMAccessControlProfileReferenceID != nil:
		if !strings.EqualFold(hs, *want.InVMAccessControlProfileReferenceID) {
			d.Differences = append(d.Differences, Difference{name, shortState(hs), ShortProfile(*want.InVMAccessControlProfileReferenceID)})
			r := *want.InVMAccessControlProfileReferenceID
			out.InVMAccessControlProfileReferenceID, changed = &r, true
		}
	}
	if want.UseLocalFileRules != nil {
		h := have != nil && have.UseLocalFileRules != nil && *have.UseLocalFileRules
		if h != *want.UseLocalFileRules {
			d.Differences = append(d.Differences, Difference{name + ".useLocalFileRules", fmt.Sprint(h), fmt.Sprint(*want.UseLocalFileRules)})
			v := *want.UseLocalFileRules
			out.UseLocalFileRules, changed = &v, true
		}
	}
	if !changed {
		return nil
	}
	return &out
}

func shortState(s string) string {
	if strings.HasPrefix(s, "/") {
		return ShortProfile(s)
	}
	return s
}
