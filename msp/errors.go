package msp

import "errors"

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	ErrUnknownEndpoint      = errors.New("msp: unknown endpoint")
	ErrInvalidMode          = errors.New("msp: invalid mode")
	ErrInvalidDefaultAccess = errors.New("msp: invalid defaultAccess")
	ErrInvalidKey           = errors.New("msp: invalid key")
	ErrInvalidRules         = errors.New("msp: invalid rules")
	ErrInvalidHeader        = errors.New("msp: invalid header")
	ErrInvalidURI           = errors.New("msp: invalid request URI")
	ErrBadAuthorization     = errors.New("msp: malformed authorization header")
	ErrSignatureMismatch    = errors.New("msp: signature mismatch")
	ErrUnknownKey           = errors.New("msp: signature names an unknown key")
	ErrInvalidModuleState   = errors.New("msp: invalid module state")
	ErrInvalidLocalRules    = errors.New("msp: invalid local rules file")
	// ErrMalformedJSON marks a document that is not the JSON expected (a
	// syntax error, a duplicate key, a wrong type), as opposed to one that
	// parsed and failed validation; upstream retries only the former.
	ErrMalformedJSON = errors.New("msp: malformed JSON")
)
