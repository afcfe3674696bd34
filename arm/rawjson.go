package arm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"
)

// A resource read from ARM may carry fields this package does not model
// (TargetRegion.encryption, additionalReplicaSets, whatever a later API
// version adds). A PUT replaces the whole resource, so writing back only the
// modelled fields would delete them. The models that are written with PUT
// therefore keep the JSON they were decoded from, and putBody sends that
// JSON with only the caller's changes applied: a field differs from what
// was read, is added, or is removed.

// putBody returns the body to PUT for a model whose writable form is w and
// which was decoded from raw (nil when the caller built it). raw is decoded
// into T again to learn what the caller started from.
func putBody[T any](raw []byte, w T) (any, error) {
	if raw == nil {
		return w, nil
	}
	var read T
	if err := json.Unmarshal(raw, &read); err != nil {
		return nil, fmt.Errorf("arm: decode resource: %w", err)
	}
	doc, err := genericJSON(raw)
	if err != nil {
		return nil, err
	}
	readJSON, err := toGeneric(read)
	if err != nil {
		return nil, err
	}
	wantJSON, err := toGeneric(w)
	if err != nil {
		return nil, err
	}
	out := mergeChanges(doc, readJSON, wantJSON)
	if m, ok := out.(map[string]any); ok {
		// Read-only envelope the service fills in; it has no business in a
		// request body.
		delete(m, "systemData")
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("arm: encode body: %w", err)
	}
	return json.RawMessage(b), nil
}

// genericJSON decodes b keeping numbers as written.
func genericJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("arm: decode resource: %w", err)
	}
	return v, nil
}

func toGeneric(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("arm: encode resource: %w", err)
	}
	return genericJSON(b)
}

// mergeChanges applies to doc (the JSON as read) the difference between
// read (what the model understood of it) and want (the model now). Members
// of doc the model does not know are kept, at every depth.
func mergeChanges(doc, read, want any) any {
	switch w := want.(type) {
	case map[string]any:
		d, dok := doc.(map[string]any)
		r, rok := read.(map[string]any)
		if !dok || !rok {
			return w
		}
		out := maps.Clone(d)
		for k := range r {
			if _, ok := w[k]; !ok {
				delete(out, k)
			}
		}
		for k, wv := range w {
			dv, inDoc := d[k]
			rv, inRead := r[k]
			if inDoc && inRead {
				out[k] = mergeChanges(dv, rv, wv)
			} else {
				out[k] = wv
			}
		}
		return out
	case []any:
		d, dok := doc.([]any)
		r, rok := read.([]any)
		if !dok || !rok || len(d) != len(r) {
			return w
		}
		out := make([]any, len(w))
		for i, wv := range w {
			if j := sameElement(r, wv, i); j >= 0 {
				out[i] = mergeChanges(d[j], r[j], wv)
			} else {
				out[i] = wv
			}
		}
		return out
	default:
		if reflect.DeepEqual(read, want) {
			return doc
		}
		return want
	}
}

// sameElement finds the element of read that want at index i stands for:
// the one with the same name (target regions, privileges, roles,
// identities), else the one at the same index.
func sameElement(read []any, want any, i int) int {
	if wm, ok := want.(map[string]any); ok {
		if name, ok := wm["name"].(string); ok {
			for j, r := range read {
				if rm, ok := r.(map[string]any); ok {
					if rn, ok := rm["name"].(string); ok && strings.EqualFold(rn, name) {
						return j
					}
				}
			}
			return -1
		}
	}
	if i < len(read) {
		return i
	}
	return -1
}
