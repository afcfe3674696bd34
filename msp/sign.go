package msp

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"strings"
	"sync"
)

// HeaderField is one request header line as it goes on the wire.
type HeaderField struct {
	Name  string
	Value string
}

// Message is the part of an HTTP request that MSP signs: exactly the head
// and body that go on the wire. Header must list every header line that is
// sent, Host included, in wire order; duplicates are allowed (the last one
// is signed, as upstream does).
type Message struct {
	Method string
	// RawURI is the origin-form request target, "/path?query", byte for byte
	// as sent.
	RawURI string
	Header []HeaderField
	Body   []byte
}

// Get returns the value of the last header named name (case-insensitive).
func (m *Message) Get(name string) (string, bool) {
	for i := len(m.Header) - 1; i >= 0; i-- {
		if strings.EqualFold(m.Header[i].Name, name) {
			return m.Header[i].Value, true
		}
	}
	return "", false
}

// Set replaces every header named name with one line name: value, keeping
// the position of the first.
func (m *Message) Set(name, value string) {
	found := false
	out := m.Header[:0]
	for _, h := range m.Header {
		if strings.EqualFold(h.Name, name) {
			if found {
				continue
			}
			found = true
			h = HeaderField{Name: name, Value: value}
		}
		out = append(out, h)
	}
	if !found {
		out = append(out, HeaderField{Name: name, Value: value})
	}
	m.Header = out
}

// Del removes every header named name.
func (m *Message) Del(name string) {
	m.Header = slices.DeleteFunc(m.Header, func(h HeaderField) bool { return strings.EqualFold(h.Name, name) })
}

// scratch holds the buffers one string-to-sign build needs, so a warm
// signer allocates only the header value it returns.
type scratch struct {
	mac   [sha256.Size]byte // the HMAC's output, here so that it does not escape
	buf   []byte
	names []byte
	hs    []span
	qs    []qpair
}

type span struct {
	start, end int // lowercased name in scratch.names
	idx        int // index in Message.Header
}

type qpair struct {
	raw        string // the piece as in the URI
	keyLen     int    // length of the key part in raw
	start, end int    // lowercased key + raw value in scratch.names
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// AppendStringToSign appends the string to sign of docs/protocol.md §3.2 to dst.
// Header values must be visible ASCII, space or tab, and the URI printable
// ASCII; otherwise the error wraps ErrInvalidHeader or ErrInvalidURI.
func AppendStringToSign(dst []byte, m *Message) ([]byte, error) {
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	return s.build(dst, m)
}

// StringToSign returns the string to sign of m.
func StringToSign(m *Message) (string, error) {
	b, err := AppendStringToSign(nil, m)
	return string(b), err
}

func (s *scratch) build(dst []byte, m *Message) ([]byte, error) {
	if err := checkURI(m.RawURI); err != nil {
		return dst, err
	}
	path, query, _ := strings.Cut(m.RawURI, "?")

	dst = append(dst, m.Method...)
	dst = append(dst, '\n')
	dst = append(dst, m.Body...)
	dst = append(dst, '\n')

	s.names = s.names[:0]
	s.hs = s.hs[:0]
	for i, h := range m.Header {
		if !validHeaderValue(h.Value) {
			return dst, fmt.Errorf("%w: value of %q is not visible ASCII", ErrInvalidHeader, h.Name)
		}
		if !validHeaderName(h.Name) {
			return dst, fmt.Errorf("%w: name %q", ErrInvalidHeader, h.Name)
		}
		start := len(s.names)
		s.names = appendLower(s.names, h.Name)
		s.hs = append(s.hs, span{start, len(s.names), i})
	}
	names := s.names
	slices.SortStableFunc(s.hs, func(a, b span) int {
		return bytes.Compare(names[a.start:a.end], names[b.start:b.end])
	})
	for i, h := range s.hs {
		name := names[h.start:h.end]
		if i+1 < len(s.hs) {
			n := s.hs[i+1]
			if bytes.Equal(name, names[n.start:n.end]) {
				continue // the last duplicate wins
			}
		}
		if string(name) == HeaderAuthorization {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ':')
		dst = append(dst, trimOWS(m.Header[h.idx].Value)...)
		dst = append(dst, '\n')
	}
	dst = append(dst, path...)
	dst = append(dst, '\n')
	return s.appendQuery(dst, query), nil
}

// appendQuery writes the canonical query of §3.2: pieces split on '&' and the
// first '=', empty keys dropped, keys lowercased, values raw, ordered and
// de-duplicated by lowercased key + value (upstream's map key, collisions
// included), bare keys for empty values.
func (s *scratch) appendQuery(dst []byte, query string) []byte {
	s.qs = s.qs[:0]
	s.names = s.names[:0]
	for query != "" {
		var piece string
		piece, query, _ = strings.Cut(query, "&")
		key, val, _ := strings.Cut(piece, "=")
		if key == "" {
			continue
		}
		start := len(s.names)
		s.names = appendLower(s.names, key)
		s.names = append(s.names, val...)
		s.qs = append(s.qs, qpair{raw: piece, keyLen: len(key), start: start, end: len(s.names)})
	}
	names := s.names
	slices.SortStableFunc(s.qs, func(a, b qpair) int {
		return bytes.Compare(names[a.start:a.end], names[b.start:b.end])
	})
	first := true
	for i, q := range s.qs {
		if i+1 < len(s.qs) {
			n := s.qs[i+1]
			if bytes.Equal(names[q.start:q.end], names[n.start:n.end]) {
				continue
			}
		}
		if !first {
			dst = append(dst, '&')
		}
		first = false
		dst = append(dst, names[q.start:q.start+q.keyLen]...)
		if val := q.raw[min(q.keyLen+1, len(q.raw)):]; val != "" {
			dst = append(dst, '=')
			dst = append(dst, val...)
		}
	}
	return dst
}

// CanonicalSigningQuery returns the raw path and canonical query that the
// string to sign carries for rawURI (upstream's
// get_path_and_canonicalized_parameters).
func CanonicalSigningQuery(rawURI string) (path, query string) {
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	p, q, _ := strings.Cut(rawURI, "?")
	return p, string(s.appendQuery(nil, q))
}

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func trimOWS(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

func validHeaderName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// checkURI rejects request targets that are not printable ASCII: the wire
// form of a URI never needs anything else, and upstream's behaviour on them
// is undefined.
func checkURI(u string) error {
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%w: byte 0x%02x at offset %d", ErrInvalidURI, c, i)
		}
	}
	return nil
}

// Signer signs messages with one key. It is safe for concurrent use; a new
// key means a new Signer, so a request is never signed with a half-updated
// key.
type Signer struct {
	guid   string
	prefix string // "Azure-HMAC-SHA256 <guid> "
	macs   sync.Pool
}

// NewSigner returns a signer for k.
func NewSigner(k Key) (*Signer, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("%w: cannot sign without a key", ErrInvalidKey)
	}
	secret := slices.Clone(k.secret)
	s := &Signer{guid: k.GUID, prefix: AuthScheme + " " + k.GUID + " "}
	s.macs.New = func() any { return hmac.New(sha256.New, secret) }
	return s, nil
}

// GUID returns the key's GUID.
func (s *Signer) GUID() string { return s.guid }

// Sign returns the x-ms-azure-host-authorization value for m:
// "Azure-HMAC-SHA256 <guid> <lowercase hex>".
func (s *Signer) Sign(m *Message) (string, error) {
	var sum [sha256.Size]byte
	if err := s.sum(&sum, m); err != nil {
		return "", err
	}
	out := make([]byte, len(s.prefix)+hex.EncodedLen(len(sum)))
	copy(out, s.prefix)
	hex.Encode(out[len(s.prefix):], sum[:])
	return unsafeString(out), nil
}

func (s *Signer) sum(out *[sha256.Size]byte, m *Message) error {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	var err error
	sc.buf, err = sc.build(sc.buf[:0], m)
	if err != nil {
		return err
	}
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(sc.buf)
	copy(out[:], mac.Sum(sc.mac[:0]))
	s.macs.Put(mac)
	return nil
}

// ComputeHMAC returns the lowercase hex HMAC-SHA256 of data under k, as
// upstream's compute_signature does.
func ComputeHMAC(k Key, data []byte) (string, error) {
	if !k.Valid() {
		return "", fmt.Errorf("%w: no secret", ErrInvalidKey)
	}
	mac := hmac.New(sha256.New, k.secret)
	mac.Write(data)
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// ParseAuthorization splits an x-ms-azure-host-authorization value into the
// key GUID and the hex signature. Errors wrap ErrBadAuthorization.
func ParseAuthorization(v string) (guid, sig string, err error) {
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || scheme != AuthScheme {
		return "", "", fmt.Errorf("%w: want scheme %s", ErrBadAuthorization, AuthScheme)
	}
	guid, sig, ok = strings.Cut(rest, " ")
	if !ok || guid == "" || len(sig) != 2*sha256.Size || strings.Contains(sig, " ") {
		return "", "", fmt.Errorf("%w: want \"%s <guid> <64 hex digits>\"", ErrBadAuthorization, AuthScheme)
	}
	return guid, sig, nil
}

// Verify checks that m carries a valid x-ms-azure-host-authorization header
// made with a key that lookup knows. The comparison is constant-time. The
// errors wrap ErrBadAuthorization, ErrUnknownKey or ErrSignatureMismatch.
// A host that verifies many requests should use a Verifier, which keeps
// the HMAC state of its keys.
func Verify(m *Message, lookup func(guid string) (Key, bool)) (Key, error) {
	return (&Verifier{lookup: lookup}).Verify(m)
}

// Verify is Verify with the verifier's lookup.
func (v *Verifier) Verify(m *Message) (Key, error) {
	authz, ok := m.Get(HeaderAuthorization)
	if !ok {
		return Key{}, fmt.Errorf("%w: header missing", ErrBadAuthorization)
	}
	guid, sig, err := ParseAuthorization(trimOWS(authz))
	if err != nil {
		return Key{}, err
	}
	k, ok := v.lookup(guid)
	if !ok || !k.Valid() {
		v.forget(guid)
		return Key{}, fmt.Errorf("%w: %s", ErrUnknownKey, guid)
	}
	var want [sha256.Size]byte
	if !decodeHex(want[:], sig) {
		return Key{}, fmt.Errorf("%w: signature is not hex", ErrBadAuthorization)
	}
	signer, err := v.signer(k)
	if err != nil {
		return Key{}, err
	}
	var got [sha256.Size]byte
	if err := signer.sum(&got, m); err != nil {
		return Key{}, err
	}
	if !hmac.Equal(got[:], want[:]) {
		return Key{}, fmt.Errorf("%w: key %s", ErrSignatureMismatch, guid)
	}
	return k, nil
}

// decodeHex decodes s, exactly 2*len(dst) hex digits of either case, into
// dst without allocating.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, lo := s[2*i], s[2*i+1]
		if !isHex(hi) || !isHex(lo) {
			return false
		}
		dst[i] = unhex(hi)<<4 | unhex(lo)
	}
	return true
}

// verifierKeys bounds the signers a Verifier keeps: a host has a key or
// two per VM, and a client that names many keys must not grow the cache.
const verifierKeys = 16

// Verifier checks signatures as Verify does, keeping a Signer per key:
// setting up the HMAC state of a key for every request was more than half
// of what Verify cost. It is safe for concurrent use.
type Verifier struct {
	lookup func(guid string) (Key, bool)

	mu      sync.Mutex
	signers map[string]verifierEntry
}

type verifierEntry struct {
	key    Key
	signer *Signer
}

// NewVerifier returns a verifier for the keys lookup knows. lookup is asked
// on every call, so a key it stops returning, or replaces under the same
// GUID, stops verifying at once.
func NewVerifier(lookup func(guid string) (Key, bool)) *Verifier {
	return &Verifier{lookup: lookup, signers: make(map[string]verifierEntry)}
}

// forget drops the signer of a key the lookup no longer knows, so that a
// withdrawn key's secret does not stay in memory.
func (v *Verifier) forget(guid string) {
	v.mu.Lock()
	delete(v.signers, guid)
	v.mu.Unlock()
}

func (v *Verifier) signer(k Key) (*Signer, error) {
	if v.signers == nil {
		return NewSigner(k) // the package Verify's one-off verifier keeps none
	}
	v.mu.Lock()
	e, ok := v.signers[k.GUID]
	v.mu.Unlock()
	if ok && e.key.Equal(k) {
		return e.signer, nil
	}
	s, err := NewSigner(k)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if len(v.signers) >= verifierKeys {
		clear(v.signers)
	}
	v.signers[k.GUID] = verifierEntry{key: k, signer: s}
	v.mu.Unlock()
	return s, nil
}
