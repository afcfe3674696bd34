package policy_test

import (
	"fmt"
	"log"
	"strings"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/policy"
)

func Example() {
	auditLog := `{"method":"GET","url":"/metadata/instance/compute/vmId?api-version=2021-02-01","ip":"169.254.169.254","port":80,"userName":"root","processFullPath":"/usr/bin/curl","runAsElevated":true,"decision":"audit"}
{"method":"GET","url":"/metadata/instance/compute/location?api-version=2021-02-01","ip":"169.254.169.254","port":80,"userName":"root","processFullPath":"/usr/bin/curl","runAsElevated":true,"decision":"audit"}
{"method":"GET","url":"/metadata/identity/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F","ip":"169.254.169.254","port":80,"userName":"app","processFullPath":"/opt/app/bin/app","decision":"audit"}`
	records, err := policy.ReadAuditLog(strings.NewReader(auditLog))
	if err != nil {
		log.Fatal(err)
	}
	learned, err := policy.Learn(records, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range learned.Item.Rules.Privileges {
		fmt.Println("privilege", p.Path, p.QueryParameters)
	}
	sim, err := policy.NewSimulator(map[msp.Endpoint]*msp.AuthorizationItem{msp.EndpointIMDS: learned.Item})
	if err != nil {
		log.Fatal(err)
	}
	report := sim.Replay(records)
	fmt.Println("replayed", report.Total, "denied", report.Denied)
	// A caller the log never saw is denied.
	d := sim.Decide(msp.EndpointIMDS, &msp.Request{Method: "GET", RawURI: "/metadata/instance/compute/vmId",
		Claims: &msp.Claims{UserName: "eve", ProcessFullPath: "/tmp/x"}})
	fmt.Println("unknown caller:", d.Canonical.Verdict, d.Canonical.Reason)
	// Output:
	// privilege /metadata/identity/oauth2/token map[resource:https://management.azure.com/]
	// privilege /metadata/instance/compute map[]
	// replayed 3 denied 0
	// unknown caller: deny no-identity-matched
}
