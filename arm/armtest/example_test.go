package armtest_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

// Test automation against the fake: seed a VM, point the client at the
// server, act, then assert on what the server received and holds.
func ExampleNewServer() {
	srv := armtest.NewServer(nil)
	defer srv.Close()
	srv.AddVirtualMachine("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
		armtest.VM{Location: "westus", OSType: "Linux", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":1}`})

	client, err := arm.NewClient("s1", &fake.TokenCredential{}, &arm.ClientOptions{ClientOptions: srv.ClientOptions()})
	if err != nil {
		log.Fatal(err)
	}
	reset, err := client.BeginResetVirtualMachineKey(context.Background(), "rg", "vm1", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("new key incarnation:", reset.KeyIncarnationID)
	for _, r := range srv.Requests() {
		fmt.Println(strings.TrimSpace(r.Method + " " + r.APIVersion() + " " + string(r.Body)))
	}
	// Output:
	// new key incarnation: 2
	// GET 2025-04-01
	// PATCH 2025-04-01 {"properties":{"securityProfile":{"proxyAgentSettings":{"keyIncarnationId":2}}}}
}
