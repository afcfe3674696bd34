package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/metadatasec/gpa/msp"
)

// schemaCheck validates v against the subset of JSON Schema that
// rules.schema.json uses: $ref into $defs, anyOf, type, enum, required,
// properties, additionalProperties (false or a schema), items, minItems,
// minLength, minProperties. It returns every violation, with its path.
type schemaCheck struct{ root map[string]any }

func (s *schemaCheck) validate(sch map[string]any, v any, at string) []string {
	if ref, ok := sch["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/$defs/")
		return s.validate(s.root["$defs"].(map[string]any)[name].(map[string]any), v, at)
	}
	if alts, ok := sch["anyOf"].([]any); ok {
		var all []string
		for _, alt := range alts {
			errs := s.validate(alt.(map[string]any), v, at)
			if len(errs) == 0 {
				return nil
			}
			all = append(all, errs...)
		}
		return []string{fmt.Sprintf("%s: matches no alternative (%s)", at, strings.Join(all, "; "))}
	}
	var errs []string
	if t, ok := sch["type"].(string); ok && !jsonType(v, t) {
		return []string{fmt.Sprintf("%s: want %s", at, t)}
	}
	if enum, ok := sch["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			found = found || e == v
		}
		if !found {
			errs = append(errs, fmt.Sprintf("%s: %v not in %v", at, v, enum))
		}
	}
	if n, ok := sch["minLength"].(float64); ok {
		if str, _ := v.(string); len(str) < int(n) {
			errs = append(errs, fmt.Sprintf("%s: shorter than %v", at, n))
		}
	}
	if arr, ok := v.([]any); ok {
		if n, ok := sch["minItems"].(float64); ok && len(arr) < int(n) {
			errs = append(errs, fmt.Sprintf("%s: fewer than %v items", at, n))
		}
		if items, ok := sch["items"].(map[string]any); ok {
			for i, e := range arr {
				errs = append(errs, s.validate(items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		if n, ok := sch["minProperties"].(float64); ok && len(obj) < int(n) {
			errs = append(errs, fmt.Sprintf("%s: fewer than %v properties", at, n))
		}
		if req, ok := sch["required"].([]any); ok {
			for _, r := range req {
				if _, ok := obj[r.(string)]; !ok {
					errs = append(errs, fmt.Sprintf("%s: missing %s", at, r))
				}
			}
		}
		props, _ := sch["properties"].(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := props[k].(map[string]any); ok {
				errs = append(errs, s.validate(p, obj[k], at+"."+k)...)
				continue
			}
			switch ap := sch["additionalProperties"].(type) {
			case bool:
				if !ap {
					errs = append(errs, fmt.Sprintf("%s: unexpected property %s", at, k))
				}
			case map[string]any:
				errs = append(errs, s.validate(ap, obj[k], at+"."+k)...)
			}
		}
	}
	return errs
}

func jsonType(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer", "number":
		_, ok := v.(float64)
		return ok
	}
	return false
}

func loadSchema(t *testing.T) *schemaCheck {
	t.Helper()
	b, err := os.ReadFile("rules.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	return &schemaCheck{root: root}
}

func checkDoc(s *schemaCheck, b []byte) []string {
	var v any
	if err := json.Unmarshal(bytes.TrimPrefix(b, []byte{0xEF, 0xBB, 0xBF}), &v); err != nil {
		return []string{err.Error()}
	}
	return s.validate(s.root, v, "$")
}

// Every example under testdata/rules validates against the schema and
// reads as a rule set; every bad-*.json example fails the schema.
func TestSchemaValidatesExamples(t *testing.T) {
	s := loadSchema(t)
	files, err := filepath.Glob("testdata/rules/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		errs := checkDoc(s, b)
		if strings.HasPrefix(filepath.Base(f), "bad-") {
			if len(errs) == 0 {
				t.Errorf("%s: schema accepted a bad document", f)
			}
			continue
		}
		if len(errs) > 0 {
			t.Errorf("%s: %s", f, strings.Join(errs, "\n"))
		}
		item, _, err := ReadRules(b, msp.ModeEnforce)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := item.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// What Learn and WriteRules produce validates against the schema, in every
// format.
func TestSchemaValidatesWrittenRules(t *testing.T) {
	s := loadSchema(t)
	res, err := Learn(genLog(3, 500, 6, 20), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{FormatItem, FormatLocal, FormatGallery} {
		b, err := WriteRules(res.Item, f, "eastus")
		if err != nil {
			t.Fatal(err)
		}
		if errs := checkDoc(s, b); len(errs) > 0 {
			t.Errorf("%v: %s", f, strings.Join(errs, "\n"))
		}
	}
}
