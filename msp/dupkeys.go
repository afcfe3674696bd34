package msp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrDuplicateKey marks a JSON object that names the same member twice.
var ErrDuplicateKey = errors.New("duplicate JSON key")

// RejectDuplicateKeys reports the first object in data that names a key
// twice. Upstream reads its files into Rust structs, and serde refuses a
// struct field given twice ("duplicate field"), while encoding/json keeps
// the last value; a map member (queryParameters) may repeat in serde, last
// wins, so objects that are the value of a key in mapKeys are exempt.
func RejectDuplicateKeys(data []byte, mapKeys ...string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		exempt bool
		seen   map[string]bool
		want   bool // an object expects a key next
	}
	var stack []*frame
	lastKey := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.want {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, _ := tok.(string)
			if top.seen[k] && !top.exempt {
				return fmt.Errorf("%w %q", ErrDuplicateKey, k)
			}
			top.seen[k], top.want, lastKey = true, false, k
			continue
		}
		// A value: in an object, the next token is a key again.
		key := ""
		if top != nil && top.object {
			top.want, key = true, lastKey
		}
		switch tok {
		case json.Delim('{'):
			exempt := false
			for _, m := range mapKeys {
				exempt = exempt || m == key
			}
			stack = append(stack, &frame{object: true, exempt: exempt, seen: map[string]bool{}, want: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}
