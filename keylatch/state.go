package keylatch

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/metadatasec/gpa/msp"
)

// StateFileName is the file beside the keys where the latcher keeps what it
// last knew. Its name cannot be taken for a key file (no ".key" suffix) and
// no host guid can name it.
const StateFileName = "latch-state.json"

// StateFileVersion is the format version LatchState is written with; a file
// of another version is ErrCorruptState.
const StateFileVersion = 1

// maxStateBytes bounds the state file: it carries the rule sets, which can
// be larger than a key file.
const maxStateBytes = 1 << 20

// KeepUnattestedKeys is how many key files, besides the current and the
// previous key (and the one the host's status names), the store keeps:
// every refused attestation leaves a file behind, and the oldest go first.
const KeepUnattestedKeys = 3

// LatchState is what a latcher last knew, as it keeps it on disk so that a
// restarted agent can sign with the latched key and knows which endpoints
// were in Enforce before the host answers again. It names the key by guid
// and never holds key material: the key itself stays in its <guid>.key
// file.
type LatchState struct {
	// Version is StateFileVersion.
	Version int `json:"version"`
	// State is the secure-channel state string of the last published
	// snapshot (gpa-protocol §2.5).
	State string `json:"secureChannelState"`
	// KeyGUID names the latched key; empty when there was none.
	KeyGUID string `json:"keyGuid,omitempty"`
	// KeyIncarnationID is the host's keyIncarnationId, when it sent one.
	KeyIncarnationID *uint32 `json:"keyIncarnationId,omitempty"`
	// PreviousKeyGUID names the key latched before KeyGUID, whose file is
	// kept too.
	PreviousKeyGUID string `json:"previousKeyGuid,omitempty"`
	// Endpoints are the effective rule sets: each endpoint's mode, default
	// access, rule id and rules, as the snapshot enforced them.
	Endpoints map[msp.Endpoint]*msp.AuthorizationItem `json:"endpoints,omitempty"`
	// Saved is when the state was written.
	Saved time.Time `json:"saved"`
}

// ErrCorruptState means the state file exists but cannot be used: it does
// not parse, has another version or holds impossible values. The latcher
// then starts as on first boot and leaves the file (and every key file) as
// it is until its next state replaces it.
var ErrCorruptState = errors.New("keylatch: corrupt latch state file")

// ErrNoState means the store holds no state file: a first boot, or an agent
// version that did not write one.
var ErrNoState = errors.New("keylatch: no latch state file")

// StatePath returns where the latch state is kept.
func (s *Store) StatePath() string { return filepath.Join(s.dir, StateFileName) }

// SaveState writes st atomically (temp file, fsync, rename, folder fsync),
// mode 0600, as the key files are written.
func (s *Store) SaveState(st *LatchState) error {
	if err := st.validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("keylatch: encoding the latch state: %w", err)
	}
	if len(data) > maxStateBytes {
		return fmt.Errorf("keylatch: latch state is %d bytes, more than %d", len(data), maxStateBytes)
	}
	return s.writeFile(StateFileName, data)
}

// LoadState reads the state file. A missing file is ErrNoState; one that
// does not parse or validate is ErrCorruptState; a symlink or a file others
// can read is ErrInsecurePath.
func (s *Store) LoadState() (*LatchState, error) {
	if err := s.CheckDir(); err != nil {
		return nil, err
	}
	path := s.StatePath()
	if err := s.checkLink(path, ErrNoState, "delete it; the agent writes a new one"); err != nil {
		return nil, err
	}
	data, err := s.readLimited(path, 0o077, "chown root:root "+path+" && chmod 0600 "+path, maxStateBytes)
	if err != nil {
		return nil, err
	}
	var st LatchState
	if err := decodeState(data, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptState, path, err)
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptState, path, err)
	}
	return &st, nil
}

// decodeState decodes one JSON document with no field the type lacks (a
// "key" field would mean someone put key material here) and nothing after
// it.
func decodeState(data []byte, st *LatchState) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// validate refuses what no latcher writes.
func (st *LatchState) validate() error {
	switch {
	case st.Version != StateFileVersion:
		return fmt.Errorf("version %d, want %d", st.Version, StateFileVersion)
	case st.State == "" || len(st.State) > 256 || strings.ContainsFunc(st.State, unicode.IsControl):
		return fmt.Errorf("unusable secureChannelState %q", st.State)
	}
	for _, g := range []string{st.KeyGUID, st.PreviousKeyGUID} {
		if g != "" {
			if err := validGUID(g); err != nil {
				return err
			}
		}
	}
	for ep, it := range st.Endpoints {
		if ep == msp.EndpointNone || it == nil {
			return fmt.Errorf("no rule set for endpoint %q", ep)
		}
	}
	return nil
}

// RuleIDs returns the rule-set ids of the state's endpoints, as a
// snapshot carries them.
func (st *LatchState) RuleIDs() map[msp.Endpoint]string {
	ids := map[msp.Endpoint]string{}
	for ep, it := range st.Endpoints {
		if it.ID != "" {
			ids[ep] = it.ID
		}
	}
	return ids
}

// PruneKeys removes the oldest key files until at most keepOthers remain
// besides those named in keep; it returns the guids it removed. Only
// regular files named <guid>.key are counted or removed: the state file and
// the provisioning tag files in the folder are never touched. A failure to
// remove one file is returned after the others were tried.
func (s *Store) PruneKeys(keep []string, keepOthers int) ([]string, error) {
	if err := s.CheckDir(); err != nil {
		return nil, err
	}
	ents, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("keylatch: listing %s: %w", s.dir, err)
	}
	type keyFile struct {
		guid string
		mod  time.Time
	}
	var others []keyFile
	for _, e := range ents {
		guid, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok || !e.Type().IsRegular() || validGUID(guid) != nil || slices.Contains(keep, guid) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		others = append(others, keyFile{guid, fi.ModTime()})
	}
	if len(others) <= keepOthers {
		return nil, nil
	}
	slices.SortFunc(others, func(a, b keyFile) int {
		return cmp.Or(a.mod.Compare(b.mod), strings.Compare(a.guid, b.guid))
	})
	var removed []string
	var errs []error
	for _, f := range others[:len(others)-keepOthers] {
		if err := s.fs.Remove(s.KeyPath(f.guid)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("keylatch: removing %s: %w", s.KeyPath(f.guid), err))
			continue
		}
		removed = append(removed, f.guid)
	}
	return removed, errors.Join(errs...)
}
