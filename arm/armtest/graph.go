package armtest

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Resource Graph side of the fake. It shares the resource store of the
// ARM side, so what a test writes through ARM is what the next query reads.

// ResourceGraphPath is the path of the Resource Graph query endpoint.
const ResourceGraphPath = "/providers/Microsoft.ResourceGraph/resources"

// maxSnapshots bounds the paged queries the fake remembers; older skip
// tokens then expire, as real ones do.
const maxSnapshots = 16

// fleetState is the Server's Resource Graph, rate-limit and write-record
// state. Its zero value is ready; it is guarded by Server.mu.
type fleetState struct {
	snapshots []*snapshot
	snapSeq   int

	graphQuota  quota
	writeQuota  quota
	mgs         map[string][]string
	writes      map[string]int
	upgrades    map[string]int
	lastQueries []string
}

// snapshot is the ordered result set of one query, taken at its first page
// so that later pages do not shift when resources change in between.
type snapshot struct {
	id    int
	query string
	keys  []string
}

// quota is a fixed window of n requests.
type quota struct {
	n      int
	window time.Duration
	start  time.Time
	used   int
}

// take consumes one request and reports what is left and when the window
// resets; ok is false when the window is exhausted.
func (q *quota) take(now time.Time) (remaining int, resets time.Duration, ok bool) {
	if q.n <= 0 {
		return 0, 0, true
	}
	if now.Sub(q.start) >= q.window {
		q.start, q.used = now, 0
	}
	resets = q.window - now.Sub(q.start)
	if q.used >= q.n {
		return 0, resets, false
	}
	q.used++
	return q.n - q.used, resets, true
}

// SetResourceGraphQuota lets n Resource Graph queries through per window,
// like the service's per-user quota: every answer carries
// x-ms-user-quota-remaining and x-ms-user-quota-resets-after, and a query
// beyond the quota gets 429 with those headers and no Retry-After. n <= 0
// removes the quota.
func (s *Server) SetResourceGraphQuota(n int, window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fleet.graphQuota = quota{n: n, window: window}
}

// SetWriteRateLimit lets n ARM writes (PUT, PATCH, POST, DELETE) through
// per window. Every write answer carries
// x-ms-ratelimit-remaining-subscription-writes; a write beyond the limit gets
// 429 with Retry-After (seconds) and Retry-After-Ms until the window resets.
// n <= 0 removes the limit.
func (s *Server) SetWriteRateLimit(n int, window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fleet.writeQuota = quota{n: n, window: window}
}

// SetManagementGroup says which subscriptions a management group holds, for
// queries scoped by managementGroups.
func (s *Server) SetManagementGroup(name string, subscriptionIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fleet.mgs == nil {
		s.fleet.mgs = map[string][]string{}
	}
	s.fleet.mgs[strings.ToLower(name)] = slices.Clone(subscriptionIDs)
}

// Writes returns, for every VM, scale set, instance or gallery resource
// that accepted at least one write (an update or create that passed
// validation and If-Match), how many it accepted, keyed by the lowercased
// resource id. Manual upgrades are counted apart, by UpgradeCounts.
func (s *Server) Writes() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.fleet.writes)
}

// UpgradeCounts returns how many manual upgrades each scale set accepted,
// keyed by the lowercased scale-set id.
func (s *Server) UpgradeCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.fleet.upgrades)
}

// ResourceGraphQueries returns the KQL texts of the queries received, in
// order (the last 1000).
func (s *Server) ResourceGraphQueries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.fleet.lastQueries)
}

// recordWrite counts an accepted write; called by accept.
func (s *Server) recordWrite(rt route) {
	if s.fleet.writes == nil {
		s.fleet.writes, s.fleet.upgrades = map[string]int{}, map[string]int{}
	}
	switch rt.action {
	case "":
		s.fleet.writes[rt.key]++
	case "manualupgrade":
		s.fleet.upgrades[rt.key]++
	}
}

// serveFleet handles what the fleet side adds before the ARM routes: the
// Resource Graph endpoint and the ARM write rate limit. It reports whether
// it answered the request. Called with s.mu held.
func (s *Server) serveFleet(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if strings.EqualFold(strings.TrimSuffix(r.URL.Path, "/"), ResourceGraphPath) {
		s.serveResourceGraph(w, r, body)
		return true
	}
	if r.Method == http.MethodGet || s.fleet.writeQuota.n <= 0 {
		return false
	}
	remaining, resets, ok := s.fleet.writeQuota.take(time.Now())
	w.Header().Set("x-ms-ratelimit-remaining-subscription-writes", strconv.Itoa(remaining))
	if ok {
		return false
	}
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(resets.Seconds())), 10))
	w.Header().Set("Retry-After-Ms", strconv.FormatInt(max(resets.Milliseconds(), 1), 10))
	writeError(w, &ServiceError{Status: http.StatusTooManyRequests, Code: "TooManyRequests",
		Message: "Number of write requests for subscription exceeded the limit."})
	return true
}

// graphRequest is the body of a Resource Graph query.
type graphRequest struct {
	Query            string   `json:"query"`
	Subscriptions    []string `json:"subscriptions"`
	ManagementGroups []string `json:"managementGroups"`
	Options          struct {
		Top          *int   `json:"$top"`
		Skip         *int   `json:"$skip"`
		SkipToken    string `json:"$skipToken"`
		ResultFormat string `json:"resultFormat"`
	} `json:"options"`
}

type skipToken struct {
	Snapshot int `json:"s"`
	Offset   int `json:"o"`
}

// serveResourceGraph answers a query. The fake does not evaluate KQL: it
// returns every VM, scale set and scale-set instance in the requested
// subscriptions (all of them when the request names none), ordered by id,
// as rows of the columns id, name, type, location, subscriptionId,
// resourceGroup, tags and properties, with type and resourceGroup in lower
// case as the service returns them. Pages hold $top rows (default 100, at
// most 1000) and continue with $skipToken; a token is tied to its query.
func (s *Server) serveResourceGraph(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Method != http.MethodPost {
		writeError(w, &ServiceError{Status: http.StatusMethodNotAllowed, Code: "MethodNotAllowed", Message: "Use POST."})
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		writeError(w, &ServiceError{Status: http.StatusUnauthorized, Code: "AuthenticationFailed", Message: "Authentication failed."})
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, &ServiceError{Status: http.StatusBadRequest, Code: "MissingApiVersionParameter", Message: "The api-version query parameter is required."})
		return
	}
	remaining, resets, ok := s.fleet.graphQuota.take(time.Now())
	if s.fleet.graphQuota.n > 0 {
		w.Header().Set("x-ms-user-quota-remaining", strconv.Itoa(remaining))
		w.Header().Set("x-ms-user-quota-resets-after", formatTimeSpan(resets))
	}
	if !ok {
		writeError(w, &ServiceError{Status: http.StatusTooManyRequests, Code: "RateLimiting",
			Message: "Please provide below info when asking for support: too many requests, quota exceeded."})
		return
	}
	var q graphRequest
	if err := json.Unmarshal(body, &q); err != nil || strings.TrimSpace(q.Query) == "" {
		writeError(w, badRequest("BadRequest", "query", "The request content was invalid: a query is required."))
		return
	}
	if len(s.fleet.lastQueries) >= 1000 {
		s.fleet.lastQueries = s.fleet.lastQueries[1:]
	}
	s.fleet.lastQueries = append(s.fleet.lastQueries, q.Query)
	top := 100
	if q.Options.Top != nil {
		top = *q.Options.Top
	}
	if top < 1 || top > 1000 {
		writeError(w, badRequest("BadRequest", "options.$top", "$top must be between 1 and 1000."))
		return
	}
	var snap *snapshot
	offset := 0
	if q.Options.SkipToken != "" {
		var tok skipToken
		raw, err := base64.RawURLEncoding.DecodeString(q.Options.SkipToken)
		if err == nil {
			err = json.Unmarshal(raw, &tok)
		}
		if err == nil {
			for _, sn := range s.fleet.snapshots {
				if sn.id == tok.Snapshot {
					snap = sn
				}
			}
		}
		if snap == nil || snap.query != q.Query || tok.Offset < 0 || tok.Offset > len(snap.keys) {
			writeError(w, badRequest("BadRequest", "options.$skipToken", "The skip token is invalid, expired or belongs to another query."))
			return
		}
		offset = tok.Offset
	} else {
		snap = s.takeSnapshot(q)
		if q.Options.Skip != nil {
			offset = min(max(*q.Options.Skip, 0), len(snap.keys))
		}
	}
	end := min(offset+top, len(snap.keys))
	rows := make([]any, 0, end-offset)
	for _, k := range snap.keys[offset:end] {
		if res, ok := s.res[k]; ok {
			rows = append(rows, graphRow(res))
		}
	}
	page := map[string]any{
		"totalRecords":    len(snap.keys),
		"count":           len(rows),
		"resultTruncated": "false",
		"data":            rows,
	}
	if end < len(snap.keys) {
		tok, _ := json.Marshal(skipToken{Snapshot: snap.id, Offset: end})
		page["$skipToken"] = base64.RawURLEncoding.EncodeToString(tok)
	}
	writeJSON(w, http.StatusOK, page, nil)
}

// takeSnapshot orders the keys the query's scope covers and remembers them
// under a new id.
func (s *Server) takeSnapshot(q graphRequest) *snapshot {
	subs := map[string]bool{}
	for _, sub := range q.Subscriptions {
		subs[strings.ToLower(sub)] = true
	}
	for _, mg := range q.ManagementGroups {
		for _, sub := range s.fleet.mgs[strings.ToLower(mg)] {
			subs[strings.ToLower(sub)] = true
		}
		if _, known := s.fleet.mgs[strings.ToLower(mg)]; !known {
			// An unknown group holds nothing; keep the filter non-empty.
			subs["\x00"] = true
		}
	}
	var keys []string
	for k, res := range s.res {
		if res.kind != kindVM && res.kind != kindScaleSet && res.kind != kindInstance {
			continue
		}
		if len(subs) > 0 && !subs[subscriptionOf(k)] {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s.fleet.snapSeq++
	sn := &snapshot{id: s.fleet.snapSeq, query: q.Query, keys: keys}
	if len(s.fleet.snapshots) >= maxSnapshots {
		s.fleet.snapshots = s.fleet.snapshots[1:]
	}
	s.fleet.snapshots = append(s.fleet.snapshots, sn)
	return sn
}

// subscriptionOf returns the subscription of a lowercased resource key.
func subscriptionOf(key string) string {
	rest, ok := strings.CutPrefix(key, "/subscriptions/")
	if !ok {
		return ""
	}
	sub, _, _ := strings.Cut(rest, "/")
	return sub
}

// graphRow renders a stored resource the way the resources and
// computeresources tables show it.
func graphRow(res *resource) map[string]any {
	id, _ := res.body["id"].(string)
	typ, _ := res.body["type"].(string)
	row := map[string]any{
		"id":             id,
		"name":           res.body["name"],
		"type":           strings.ToLower(typ),
		"location":       res.body["location"],
		"subscriptionId": "",
		"resourceGroup":  "",
		"tags":           res.body["tags"],
		"properties":     res.body["properties"],
	}
	if segs := strings.Split(strings.Trim(id, "/"), "/"); len(segs) >= 4 {
		row["subscriptionId"] = segs[1]
		row["resourceGroup"] = strings.ToLower(segs[3])
	}
	if res.kind == kindInstance {
		row["instanceId"] = res.body["instanceId"]
	}
	if row["tags"] == nil {
		row["tags"] = map[string]any{}
	}
	return row
}

// formatTimeSpan renders d as .NET's TimeSpan, the form Resource Graph uses
// in x-ms-user-quota-resets-after: hh:mm:ss with a seven-digit fraction when
// there is one.
func formatTimeSpan(d time.Duration) string {
	d = max(d, 0)
	h := int(d / time.Hour)
	m := int(d % time.Hour / time.Minute)
	sec := int(d % time.Minute / time.Second)
	frac := int(d % time.Second / 100)
	if frac == 0 {
		return fmt.Sprintf("%02d:%02d:%02d", h, m, sec)
	}
	return fmt.Sprintf("%02d:%02d:%02d.%07d", h, m, sec, frac)
}

// Certificate returns the server's TLS certificate, for a client in another
// process that must trust it.
func (s *Server) Certificate() *x509.Certificate { return s.ts.Certificate() }
