package fleet_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"

	"github.com/metadatasec/gpa/arm/armtest"
	"github.com/metadatasec/gpa/arm/fleet"
)

// Read a desired state, see what drifts, and roll it out in two waves.
func ExampleClient_Apply() {
	srv := armtest.NewServer(nil)
	defer srv.Close()
	srv.AddFleet(6, nil)

	c, err := fleet.NewClient(&fake.TokenCredential{}, &fleet.Options{ClientOptions: srv.ClientOptions()})
	if err != nil {
		log.Fatal(err)
	}
	want, err := fleet.ReadWant(strings.NewReader(`{"proxyAgentSettings":{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"}}}`))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	sel := fleet.Selection{Scope: fleet.Scope{Subscriptions: []string{armtest.FleetSubscription(0)}}}
	_, err = c.Inventory(ctx, sel, func(r fleet.Resource) error {
		if d := want.Diff(r.Settings); d.Change != nil {
			fmt.Println(r.Name, d.Differences)
		}
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := c.Apply(ctx, sel, want, &fleet.RolloutOptions{Waves: []float64{0.5, 1}, PollFrequency: time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("planned %d, written %d, in %d waves\n", resp.Planned, resp.Written, resp.Waves)
	// Output:
	// fleet-vm-000000 [enabled: false -> true wireServer: - -> Enforce imds: - -> Audit]
	// fleet-vm-000001 [wireServer: Audit -> Enforce]
	// fleet-vm-000003 [imds: Enforce -> Audit]
	// fleet-vm-000004 [enabled: false -> true wireServer: - -> Enforce imds: - -> Audit]
	// fleet-vm-000005 [wireServer: Audit -> Enforce]
	// planned 5, written 5, in 2 waves
}

// The KQL a selection runs, to paste into Resource Graph Explorer.
func ExampleSelection_Query() {
	fmt.Println(fleet.Selection{Tags: map[string]string{"env": "prod"}}.Query())
	// Output:
	// resources
	// | where type in~ ('microsoft.compute/virtualmachines', 'microsoft.compute/virtualmachinescalesets')
	// | union (computeresources | where type =~ 'microsoft.compute/virtualmachinescalesets/virtualmachines')
	// | where tags['env'] =~ 'prod'
	// | project id, name, type, location, subscriptionId, resourceGroup, tags, properties
	// | order by id asc
}
