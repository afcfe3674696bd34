package status

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks the reader never panics and that whatever it accepts
// survives a write and a second read unchanged.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"timestamp":"2025-04-23T12:00:00"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		enc, err := s.MarshalIndent()
		if err != nil {
			t.Fatalf("accepted input does not encode: %v", err)
		}
		again, err := Parse(enc)
		if err != nil {
			t.Fatalf("own output does not parse: %v\n%s", err, enc)
		}
		if diff := cmp.Diff(s.normalized(), again.normalized(), cmpTimestamp); diff != "" {
			t.Fatalf("round trip changed the status (-first +second):\n%s", diff)
		}
	})
}

// FuzzParseSecureChannel checks that every accepted state string renders
// to a form that parses back to the same state.
func FuzzParseSecureChannel(f *testing.F) {
	for _, s := range []string{threeEnforce, "Wireserver Audit - IMDS Enforce", "disabled", "Unknown", "wireserverandimds"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseSecureChannel(s)
		if err != nil {
			return
		}
		back, err := ParseSecureChannel(c.String())
		if err != nil || back != c {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, c, c.String(), back, err)
		}
	})
}
