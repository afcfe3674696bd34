package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
)

// RuleSnapshotsKept is how many AuthorizationRules_*.json files stay in
// the log folder, upstream's MAX_LOG_FILE_COUNT.
const RuleSnapshotsKept = 5

// ruleSnapshotRE matches upstream's rule snapshot file names.
var ruleSnapshotRE = regexp.MustCompile(`^AuthorizationRules_.*\.json$`)

// RuleSnapshot is the content of an AuthorizationRules_<timestamp>.json
// file, upstream's AuthorizationRulesForLogging: the effective rule sets
// as received (local rules applied, ids as displayed, so a local-rules
// set shows "<id>-useLocalFileRules-true") and what was computed from
// them.
type RuleSnapshot struct {
	InputRules    *RuleSnapshotItems   `json:"inputRules,omitempty"`
	ComputedRules RuleSnapshotComputed `json:"computedRules"`
}

// RuleSnapshotItems are the effective rule sets per endpoint.
type RuleSnapshotItems struct {
	IMDS       *RuleSnapshotItem `json:"imds,omitempty"`
	WireServer *RuleSnapshotItem `json:"wireserver,omitempty"`
	HostGA     *RuleSnapshotItem `json:"hostga,omitempty"`
}

// RuleSnapshotItem is one rule set as received: unlike
// msp.AuthorizationItem's own JSON, a list the host left out stays out,
// as upstream writes it, so the file shows why a set was not used.
type RuleSnapshotItem struct {
	DefaultAccess msp.DefaultAccess  `json:"defaultAccess"`
	Mode          msp.Mode           `json:"mode"`
	ID            string             `json:"id"`
	Rules         *RuleSnapshotLists `json:"rules,omitempty"`
}

// RuleSnapshotLists are the four lists, each absent when it was.
type RuleSnapshotLists struct {
	Privileges      *[]msp.Privilege      `json:"privileges,omitempty"`
	Roles           *[]msp.Role           `json:"roles,omitempty"`
	Identities      *[]msp.Identity       `json:"identities,omitempty"`
	RoleAssignments *[]msp.RoleAssignment `json:"roleAssignments,omitempty"`
}

func present[T any](s []T) *[]T {
	if s == nil {
		return nil
	}
	return &s
}

func snapshotItem(it *msp.AuthorizationItem) *RuleSnapshotItem {
	if it == nil {
		return nil
	}
	out := &RuleSnapshotItem{DefaultAccess: it.DefaultAccess, Mode: it.Mode, ID: it.ID}
	if r := it.Rules; r != nil {
		out.Rules = &RuleSnapshotLists{present(r.Privileges), present(r.Roles), present(r.Identities), present(r.RoleAssignments)}
	}
	return out
}

// RuleSnapshotComputed are the computed rule sets per endpoint.
type RuleSnapshotComputed struct {
	IMDS       *ComputedRules `json:"imds,omitempty"`
	WireServer *ComputedRules `json:"wireserver,omitempty"`
	HostGA     *ComputedRules `json:"hostga,omitempty"`
}

// ComputedRules is upstream's ComputedAuthorizationItem: the rule set
// indexed by name, privileges lowercased as upstream matches them, and
// for each privilege the identities assigned it through a role.
type ComputedRules struct {
	ID                   string                   `json:"id"`
	DefaultAllowed       bool                     `json:"defaultAllowed"`
	Mode                 string                   `json:"mode"`
	Privileges           map[string]msp.Privilege `json:"privileges"`
	PrivilegeAssignments map[string][]string      `json:"privilegeAssignments"`
	Identities           map[string]msp.Identity  `json:"identities"`
}

// computeRules builds the computed form of it. As upstream, the lists are
// used only when all four are present.
func computeRules(it *msp.AuthorizationItem) *ComputedRules {
	if it == nil {
		return nil
	}
	c := &ComputedRules{ID: it.ID, DefaultAllowed: it.DefaultAccess == msp.AccessAllow, Mode: it.Mode.DisplayName(),
		Privileges: map[string]msp.Privilege{}, PrivilegeAssignments: map[string][]string{}, Identities: map[string]msp.Identity{}}
	r := it.Rules
	if !r.Complete() {
		return c
	}
	roles := map[string]msp.Role{}
	for _, ro := range r.Roles {
		roles[ro.Name] = ro
	}
	for _, id := range r.Identities {
		c.Identities[id.Name] = id
	}
	for _, p := range r.Privileges {
		n := msp.Privilege{Name: p.Name, Path: strings.ToLower(p.Path)}
		if p.QueryParameters != nil {
			n.QueryParameters = map[string]string{}
			for k, v := range p.QueryParameters {
				n.QueryParameters[strings.ToLower(k)] = strings.ToLower(v)
			}
		}
		c.Privileges[n.Name] = n
	}
	for _, ra := range r.RoleAssignments {
		ro, ok := roles[ra.Role]
		if !ok {
			continue
		}
		for _, pn := range ro.Privileges {
			if _, ok := c.Privileges[pn]; !ok {
				continue
			}
			for _, in := range ra.Identities {
				if _, ok := c.Identities[in]; ok && !slices.Contains(c.PrivilegeAssignments[pn], in) {
					c.PrivilegeAssignments[pn] = append(c.PrivilegeAssignments[pn], in)
				}
			}
		}
	}
	for _, ids := range c.PrivilegeAssignments {
		slices.Sort(ids)
	}
	return c
}

// NewRuleSnapshot returns the snapshot file content of the effective rule
// sets items.
func NewRuleSnapshot(items map[msp.Endpoint]*msp.AuthorizationItem) *RuleSnapshot {
	return &RuleSnapshot{
		InputRules: &RuleSnapshotItems{IMDS: snapshotItem(items[msp.EndpointIMDS]), WireServer: snapshotItem(items[msp.EndpointWireServer]),
			HostGA: snapshotItem(items[msp.EndpointHostGA])},
		ComputedRules: RuleSnapshotComputed{IMDS: computeRules(items[msp.EndpointIMDS]),
			WireServer: computeRules(items[msp.EndpointWireServer]), HostGA: computeRules(items[msp.EndpointHostGA])},
	}
}

// ruleSnapshots writes an AuthorizationRules file to dir each time the
// latch publishes rule sets that differ from the last ones written.
type ruleSnapshots struct {
	dir    string
	keep   int
	now    func() time.Time
	logger *slog.Logger
	last   []byte
}

func (w *ruleSnapshots) run(ctx context.Context, snaps <-chan *keylatch.Snapshot) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case s := <-snaps:
			w.observe(s)
		}
	}
}

// observe writes s's rule sets when they changed. A latch that has
// never had any rule set writes nothing.
func (w *ruleSnapshots) observe(s *keylatch.Snapshot) {
	if s == nil || (len(s.Items) == 0 && w.last == nil) {
		return
	}
	input, err := json.Marshal(NewRuleSnapshot(s.Items).InputRules)
	if err != nil || bytes.Equal(input, w.last) {
		return
	}
	if err := w.write(NewRuleSnapshot(s.Items)); err != nil {
		w.logger.Error("Failed to write the authorization rules file", "err", err)
		return
	}
	w.last = input
}

// write rotates like upstream: the oldest files go so that, with the new
// one, keep remain.
func (w *ruleSnapshots) write(doc *RuleSnapshot) error {
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return err
	}
	var old []string
	for _, e := range ents {
		if e.Type().IsRegular() && ruleSnapshotRE.MatchString(e.Name()) {
			old = append(old, e.Name())
		}
	}
	slices.Sort(old) // the timestamp in the name sorts by age
	for len(old) >= w.keep {
		if err := os.Remove(filepath.Join(w.dir, old[0])); err != nil {
			w.logger.Error("Failed to remove an old authorization rules file", "file", old[0], "err", err)
		}
		old = old[1:]
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	now := w.now().UTC()
	name := strings.ReplaceAll(fmt.Sprintf("AuthorizationRules_%s-%s.json", now.Format("2006-01-02T15:04:05.000"), strconv.FormatInt(now.UnixNano(), 10)), ":", ".")
	path := filepath.Join(w.dir, name)
	tmp := filepath.Join(w.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	w.logger.Info("Authorization rules are written to file: " + path)
	return nil
}
