package armtest_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm/armtest"
)

func query(t *testing.T, srv *armtest.Server, body map[string]any) reply {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, srv, "POST", armtest.ResourceGraphPath+"?api-version=2024-04-01", string(b), nil)
}

func rowIDs(r reply) []string {
	var ids []string
	rows, _ := r.body["data"].([]any)
	for _, row := range rows {
		ids = append(ids, row.(map[string]any)["id"].(string))
	}
	return ids
}

func TestResourceGraphPagesASnapshot(t *testing.T) {
	srv := armtest.NewServer(nil)
	defer srv.Close()
	ids := srv.AddFleet(7, &armtest.FleetOptions{ScaleSets: 1, Subscriptions: 2})
	const q = "resources | order by id asc"
	var got []string
	first := query(t, srv, map[string]any{"query": q, "options": map[string]any{"$top": 3}})
	if first.status != http.StatusOK || first.body["totalRecords"] != 7.0 || first.body["count"] != 3.0 {
		t.Fatalf("%d %v", first.status, first.body)
	}
	got = append(got, rowIDs(first)...)
	// A resource added after the first page does not shift the pages.
	srv.AddVirtualMachine("/subscriptions/"+armtest.FleetSubscription(0)+"/resourceGroups/a/providers/Microsoft.Compute/virtualMachines/late", armtest.VM{Location: "eastus", OSType: "Linux"})
	page := first
	for page.body["$skipToken"] != nil {
		tok := page.body["$skipToken"].(string)
		if r := query(t, srv, map[string]any{"query": q + " | take 1", "options": map[string]any{"$skipToken": tok}}); r.status != http.StatusBadRequest {
			t.Errorf("a token used with another query: %d", r.status)
		}
		page = query(t, srv, map[string]any{"query": q, "options": map[string]any{"$top": 3, "$skipToken": tok}})
		if page.status != http.StatusOK {
			t.Fatalf("%d %v", page.status, page.body)
		}
		got = append(got, rowIDs(page)...)
	}
	if !cmp.Equal(len(got), len(ids)) {
		t.Fatalf("got %d rows, want %d", len(got), len(ids))
	}
	for i := 1; i < len(got); i++ {
		if strings.ToLower(got[i-1]) >= strings.ToLower(got[i]) {
			t.Errorf("rows out of order at %d", i)
		}
	}
	row := first.body["data"].([]any)[0].(map[string]any)
	for _, col := range []string{"id", "name", "type", "location", "subscriptionId", "resourceGroup", "tags", "properties"} {
		if _, ok := row[col]; !ok {
			t.Errorf("row has no %s column", col)
		}
	}
	if typ := row["type"].(string); typ != strings.ToLower(typ) {
		t.Errorf("type %q is not lower case as the service returns it", typ)
	}
	scoped := query(t, srv, map[string]any{"query": q, "subscriptions": []string{armtest.FleetSubscription(1)}})
	for _, id := range rowIDs(scoped) {
		if !strings.Contains(id, armtest.FleetSubscription(1)) {
			t.Errorf("%s outside the scope", id)
		}
	}
	if len(rowIDs(scoped)) == 0 {
		t.Error("scoped query returned nothing")
	}
	srv.SetManagementGroup("mg", armtest.FleetSubscription(1))
	if mg := query(t, srv, map[string]any{"query": q, "managementGroups": []string{"mg"}}); !cmp.Equal(rowIDs(mg), rowIDs(scoped)) {
		t.Errorf("management group rows %v, want %v", rowIDs(mg), rowIDs(scoped))
	}
	if got := srv.ResourceGraphQueries(); len(got) == 0 || got[0] != q {
		t.Errorf("recorded queries %q", got)
	}
}

func TestResourceGraphQuota(t *testing.T) {
	srv := armtest.NewServer(nil)
	defer srv.Close()
	srv.AddFleet(2, nil)
	srv.SetResourceGraphQuota(2, time.Hour)
	var remaining []string
	for range 3 {
		r := query(t, srv, map[string]any{"query": "resources"})
		remaining = append(remaining, r.header.Get("x-ms-user-quota-remaining"))
		if r.header.Get("x-ms-user-quota-resets-after") == "" || r.header.Get("Retry-After") != "" {
			t.Errorf("headers %v", r.header)
		}
		if len(remaining) == 3 && (r.status != http.StatusTooManyRequests || errCode(r) != "RateLimiting") {
			t.Errorf("third query: %d %v", r.status, r.body)
		}
	}
	if !cmp.Equal(remaining, []string{"1", "0", "0"}) {
		t.Errorf("remaining %v", remaining)
	}
}

func TestWriteRateLimitAndRecord(t *testing.T) {
	srv := armtest.NewServer(nil)
	defer srv.Close()
	ids := srv.AddFleet(1, nil)
	srv.SetWriteRateLimit(1, time.Hour)
	patch := `{"properties":{"securityProfile":{"proxyAgentSettings":{"enabled":true}}}}`
	first := do(t, srv, "PATCH", ids[0], patch, nil)
	second := do(t, srv, "PATCH", ids[0], patch, nil)
	if first.status != http.StatusOK || first.header.Get("x-ms-ratelimit-remaining-subscription-writes") != "0" {
		t.Errorf("first: %d %v", first.status, first.header)
	}
	if second.status != http.StatusTooManyRequests || second.header.Get("Retry-After") == "" {
		t.Errorf("second: %d %v", second.status, second.header)
	}
	if got := do(t, srv, "GET", ids[0], "", nil); got.status != http.StatusOK {
		t.Errorf("reads are not limited: %d", got.status)
	}
	if w := srv.Writes(); !cmp.Equal(w, map[string]int{strings.ToLower(ids[0]): 1}) {
		t.Errorf("write record %v", w)
	}
}
