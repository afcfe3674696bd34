package fleet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// ErrStateMismatch: the state file belongs to another rollout (another
// operation, desired state or selection). Finish that one or choose another
// file; mixing them would skip resources that were never changed.
var ErrStateMismatch = errors.New("fleet: state file belongs to another rollout")

// stateVersion is written in the header; a file of another version is
// refused rather than misread.
const stateVersion = 1

// record is one line of a state file. The file is JSON lines, appended with
// one write per line, so that a crash loses at most the line being
// written: a header, the plan (one target line each, then a planned line),
// then begin and result lines as work happens.
type record struct {
	K       string `json:"k"` // header, target, planned, begin, result
	Version int    `json:"version,omitempty"`
	Op      string `json:"op,omitempty"`
	Digest  string `json:"digest,omitempty"`
	ID      string `json:"id,omitempty"`
	Kind    Kind   `json:"kind,omitempty"`
	Key     *int32 `json:"key,omitempty"`
	Count   int    `json:"count,omitempty"`
	Status  Status `json:"status,omitempty"`
	Error   string `json:"error,omitempty"`
	Wave    int    `json:"wave,omitempty"`
}

// stateFile is an open state file with what it held when opened.
type stateFile struct {
	mu sync.Mutex
	f  *os.File

	plan    []target          // nil when the plan must be made
	results map[string]Status // last result per id
	begun   map[string]int32  // key read before a key reset began
}

// openState opens or creates path for the rollout op/digest. A file whose
// plan was not completed is started again.
func openState(path, op, digest string) (*stateFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fleet: state file: %w", err)
	}
	st := &stateFile{f: f, results: map[string]Status{}, begun: map[string]int32{}}
	ok, err := st.load(op, digest)
	if err != nil {
		f.Close()
		return nil, err
	}
	if !ok {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("fleet: state file: %w", err)
		}
		st.plan, st.results, st.begun = nil, map[string]Status{}, map[string]int32{}
		if err := st.append(record{K: "header", Version: stateVersion, Op: op, Digest: digest}); err != nil {
			f.Close()
			return nil, err
		}
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fleet: state file: %w", err)
	}
	// A crash can leave the last line torn; end it, so that the next
	// record starts a line of its own.
	last := make([]byte, 1)
	if end > 0 {
		if _, err := f.ReadAt(last, end-1); err == nil && last[0] != '\n' {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				f.Close()
				return nil, fmt.Errorf("fleet: state file: %w", err)
			}
		}
	}
	return st, nil
}

// load reads the file; ok is false when it must be started afresh (empty,
// or the plan was never completed).
func (st *stateFile) load(op, digest string) (ok bool, err error) {
	sc := bufio.NewScanner(st.f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var plan []target
	planned, header := false, false
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			// Only the last line can be torn by a crash; anything it said
			// is checked again against the resource.
			continue
		}
		switch r.K {
		case "header":
			if r.Version != stateVersion || r.Op != op || r.Digest != digest {
				return false, fmt.Errorf("%w: it is for %s %s, this is %s %s", ErrStateMismatch, r.Op, r.Digest, op, digest)
			}
			header = true
		case "target":
			t := target{ID: r.ID, Kind: r.Kind}
			plan = append(plan, t)
		case "planned":
			planned = len(plan) == r.Count
		case "begin":
			if r.Key != nil {
				st.begun[r.ID] = *r.Key
			}
		case "result":
			st.results[r.ID] = r.Status
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("fleet: state file: %w", err)
	}
	if !header || !planned {
		return false, nil
	}
	st.plan = plan
	if st.plan == nil {
		st.plan = []target{}
	}
	return true, nil
}

func (st *stateFile) append(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, err := st.f.Write(b); err != nil {
		return fmt.Errorf("fleet: state file: %w", err)
	}
	return nil
}

// savePlan records the plan and then the marker that completes it.
func (st *stateFile) savePlan(plan []target) error {
	w := bufio.NewWriterSize(st.f, 64<<10)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, t := range plan {
		b, err := json.Marshal(record{K: "target", ID: t.ID, Kind: t.Kind})
		if err != nil {
			return err
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	b, _ := json.Marshal(record{K: "planned", Count: len(plan)})
	w.Write(b)
	w.WriteByte('\n')
	if err := w.Flush(); err != nil {
		return fmt.Errorf("fleet: state file: %w", err)
	}
	return st.f.Sync()
}

func (st *stateFile) close() error {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	err := st.f.Sync()
	if cerr := st.f.Close(); err == nil {
		err = cerr
	}
	return err
}
