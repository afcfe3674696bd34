package fleet

import (
	"fmt"
	"sort"
	"strings"
)

// Scope says where a query looks: subscriptions, management groups, or,
// when both are empty, every subscription the credential can read.
type Scope struct {
	Subscriptions    []string
	ManagementGroups []string
}

// Selection is a scope and an optional KQL filter.
type Selection struct {
	Scope
	// Where is a KQL predicate over the columns of the resources and
	// computeresources tables (id, name, type, location, subscriptionId,
	// resourceGroup, tags, properties), for example
	// "tags['env'] =~ 'prod'" or "location in~ ('eastus', 'westeurope')".
	Where string
	// Tags keeps only resources carrying every one of these tags (values
	// compared case-insensitively). It is added to the query and checked
	// again on each row.
	Tags map[string]string
}

// The resource types, as Resource Graph spells them (lower case).
const (
	typeVM       = "microsoft.compute/virtualmachines"
	typeScaleSet = "microsoft.compute/virtualmachinescalesets"
	typeInstance = "microsoft.compute/virtualmachinescalesets/virtualmachines"
)

// Query returns the KQL the selection runs: VMs and scale sets from the
// resources table, scale-set instances from computeresources, filtered,
// projected to the columns this package reads, ordered by id so that paging
// is stable. Paste it into the portal's Resource Graph Explorer to see the
// same rows.
func (s Selection) Query() string {
	var b strings.Builder
	b.WriteString("resources\n")
	fmt.Fprintf(&b, "| where type in~ ('%s', '%s')\n", typeVM, typeScaleSet)
	fmt.Fprintf(&b, "| union (computeresources | where type =~ '%s')\n", typeInstance)
	keys := make([]string, 0, len(s.Tags))
	for k := range s.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "| where tags[%s] =~ %s\n", kqlString(k), kqlString(s.Tags[k]))
	}
	if w := strings.TrimSpace(s.Where); w != "" {
		fmt.Fprintf(&b, "| where (%s)\n", w)
	}
	b.WriteString("| project id, name, type, location, subscriptionId, resourceGroup, tags, properties\n")
	b.WriteString("| order by id asc")
	return b.String()
}

// kqlString quotes s as a KQL string literal.
func kqlString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// matchTags checks Selection.Tags on a row, since the query filter is the
// service's to apply.
func (s Selection) matchTags(tags map[string]string) bool {
	for k, v := range s.Tags {
		got, ok := tags[k]
		if !ok {
			for tk, tv := range tags {
				if strings.EqualFold(tk, k) {
					got, ok = tv, true
				}
			}
		}
		if !ok || !strings.EqualFold(got, v) {
			return false
		}
	}
	return true
}
