package msp

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// LocalRules is a local rules file, WireServer_Rules.json or IMDS_Rules.json
// in the agent's rules folder, which adds to the host's rules of an
// endpoint whose rule-set id asks for it. A "mode" in the file is ignored:
// the host's mode always applies. keylatch reads it, msp/policy reads and
// writes it; this is its one definition.
type LocalRules struct {
	DefaultAccess *string             `json:"defaultAccess"`
	ID            *string             `json:"id"`
	Rules         *AccessControlRules `json:"rules"`
}

// ParseLocalRules decodes and validates a local rules file: it is read in
// the encodings upstream reads (DecodeText: UTF-8, -16 or -32, BOM or not), a key given twice in one object is refused as
// upstream's serde refuses a duplicate field (queryParameters excepted,
// a map where the last value wins), and every §4.8 validation rule
// applies. Errors wrap ErrInvalidLocalRules.
func ParseLocalRules(data []byte) (*LocalRules, error) {
	data, err := DecodeText(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrInvalidLocalRules, ErrMalformedJSON, err)
	}
	var lr LocalRules
	if err := RejectDuplicateKeys(data, "queryParameters"); err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrInvalidLocalRules, ErrMalformedJSON, err)
	}
	if err := DecodeStrictJSON(data, &lr); err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrInvalidLocalRules, ErrMalformedJSON, err)
	}
	if lr.DefaultAccess != nil {
		if _, err := ParseDefaultAccess(*lr.DefaultAccess); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidLocalRules, err)
		}
	}
	if lr.ID != nil && strings.TrimSpace(*lr.ID) == "" {
		return nil, fmt.Errorf("%w: id is blank", ErrInvalidLocalRules)
	}
	if lr.Rules != nil {
		var ve *ValidationError
		if err := lr.Rules.Validate(); errors.As(err, &ve) {
			// Completeness matters for the merged document, not for the
			// file: the file's lists are added to the host's.
			var kept []Problem
			for _, p := range ve.Problems {
				if p.Kind != ProblemIncompleteRules {
					kept = append(kept, p)
				}
			}
			if len(kept) > 0 {
				return nil, fmt.Errorf("%w: %w", ErrInvalidLocalRules, &ValidationError{Problems: kept})
			}
		} else if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidLocalRules, err)
		}
	}
	return &lr, nil
}

// MarshalIndent renders lr as a local rules file, indented for people,
// with a trailing newline. ParseLocalRules reads it back.
func (lr *LocalRules) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(lr, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLocalRules, err)
	}
	return append(b, '\n'), nil
}
