package msp

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
)

// Key is a latched HMAC key. Its secret is unexported: String, GoString,
// LogValue and errors never show it. Only Signer and the on-disk encoding
// (MarshalKeyFile) see it.
type Key struct {
	// GUID identifies the key; it goes into every signature header.
	GUID string
	// Incarnation is the keyIncarnationId the host issued the key under, if
	// it said.
	Incarnation *uint32
	// Issued is the host's issue timestamp, stored verbatim and never
	// parsed (upstream's own test value is not valid ISO 8601).
	Issued string
	// Scheme is the authorization scheme, normally AuthScheme.
	Scheme string

	secret []byte
}

// EmptyKeyGUID is the GUID upstream uses for "no key".
const EmptyKeyGUID = "00000000-0000-0000-0000-000000000000"

// NewKey builds a key from its GUID and hex-encoded secret. The secret must
// decode to at least 16 bytes; errors wrap ErrInvalidKey and never contain
// the hex text.
func NewKey(guid, hexSecret string) (Key, error) {
	if strings.TrimSpace(guid) == "" {
		return Key{}, fmt.Errorf("%w: empty guid", ErrInvalidKey)
	}
	if strings.ContainsFunc(guid, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return Key{}, fmt.Errorf("%w: guid has spaces or non-ASCII characters", ErrInvalidKey)
	}
	secret, err := hex.DecodeString(hexSecret)
	if err != nil {
		return Key{}, fmt.Errorf("%w: key %s is not valid hex", ErrInvalidKey, guid)
	}
	if len(secret) < 16 {
		return Key{}, fmt.Errorf("%w: key %s is %d bytes, want at least 16", ErrInvalidKey, guid, len(secret))
	}
	return Key{GUID: guid, Scheme: AuthScheme, secret: secret}, nil
}

// Valid reports whether the key has a secret and a GUID.
func (k Key) Valid() bool { return k.GUID != "" && len(k.secret) > 0 }

// Equal reports whether two keys have the same GUID and secret, comparing
// the secret in constant time.
func (k Key) Equal(o Key) bool {
	return k.GUID == o.GUID && len(k.secret) == len(o.secret) &&
		subtle.ConstantTimeCompare(k.secret, o.secret) == 1
}

// String names the key without its secret.
func (k Key) String() string {
	if k.Incarnation != nil {
		return fmt.Sprintf("key %s (incarnation %d)", k.GUID, *k.Incarnation)
	}
	return "key " + k.GUID
}

// GoString keeps %#v from printing the secret.
func (k Key) GoString() string {
	return "msp.Key{GUID:" + fmt.Sprintf("%q", k.GUID) + ", secret:REDACTED}"
}

// Format makes every fmt verb print String(), so %+v and %x cannot leak the
// secret either.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(k.GoString()))
		return
	}
	_, _ = f.Write([]byte(k.String()))
}

// LogValue implements slog.LogValuer without the secret.
func (k Key) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("guid", k.GUID)}
	if k.Incarnation != nil {
		attrs = append(attrs, slog.Any("incarnation", *k.Incarnation))
	}
	return slog.GroupValue(attrs...)
}

// keyFile is the on-disk and on-wire JSON of a key (docs/protocol.md §2.4), with
// the fields in upstream's order.
type keyFile struct {
	AuthorizationScheme string  `json:"authorizationScheme"`
	IncarnationID       *uint32 `json:"incarnationId,omitempty"`
	GUID                string  `json:"guid"`
	Issued              string  `json:"issued"`
	Key                 string  `json:"key"`
}

// ParseKeyJSON decodes the key JSON the host returns from
// POST /secure-channel/key and the agent stores in <guid>.key. Every
// required field must be present; errors wrap ErrInvalidKey and never carry
// the secret.
func ParseKeyJSON(data []byte) (Key, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	var raw struct {
		AuthorizationScheme *string `json:"authorizationScheme"`
		IncarnationID       *uint32 `json:"incarnationId"`
		GUID                *string `json:"guid"`
		Issued              *string `json:"issued"`
		Key                 *string `json:"key"`
	}
	if err := DecodeStrictJSON(data, &raw); err != nil {
		// json errors can quote input; report only the class of failure.
		return Key{}, fmt.Errorf("%w: malformed key JSON (%s)", ErrInvalidKey, jsonErrorClass(err))
	}
	var missing []string
	if raw.AuthorizationScheme == nil {
		missing = append(missing, "authorizationScheme")
	}
	if raw.GUID == nil {
		missing = append(missing, "guid")
	}
	if raw.Issued == nil {
		missing = append(missing, "issued")
	}
	if raw.Key == nil {
		missing = append(missing, "key")
	}
	if len(missing) > 0 {
		return Key{}, fmt.Errorf("%w: missing %s", ErrInvalidKey, strings.Join(missing, ", "))
	}
	k, err := NewKey(*raw.GUID, *raw.Key)
	if err != nil {
		return Key{}, err
	}
	k.Scheme = *raw.AuthorizationScheme
	k.Issued = *raw.Issued
	k.Incarnation = raw.IncarnationID
	return k, nil
}

// MarshalKeyFile encodes the key as upstream stores it: pretty-printed JSON
// with the secret in uppercase hex. The result holds key material; write it
// only to the key store.
func MarshalKeyFile(k Key) ([]byte, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("%w: no secret", ErrInvalidKey)
	}
	scheme := k.Scheme
	if scheme == "" {
		scheme = AuthScheme
	}
	return json.MarshalIndent(keyFile{
		AuthorizationScheme: scheme,
		IncarnationID:       k.Incarnation,
		GUID:                k.GUID,
		Issued:              k.Issued,
		Key:                 strings.ToUpper(hex.EncodeToString(k.secret)),
	}, "", "  ")
}

func jsonErrorClass(err error) string {
	switch err.(type) {
	case *json.SyntaxError:
		return "syntax error"
	case *json.UnmarshalTypeError:
		return "wrong field type"
	}
	if strings.Contains(err.Error(), "EOF") {
		return "truncated"
	}
	return "invalid"
}
