package armtest

import (
	"fmt"
	"strconv"
)

// FleetOptions shapes the resources AddFleet generates; nil is fine.
type FleetOptions struct {
	// Subscriptions spreads the resources over this many subscriptions,
	// named 00000000-0000-0000-0000-00000000000N. Default 1.
	Subscriptions int
	// ScaleSets is how many of the n resources are scale sets; each brings
	// InstancesPerScaleSet instances, which count towards n too.
	ScaleSets int
	// InstancesPerScaleSet defaults to 2.
	InstancesPerScaleSet int
	// UpgradeMode of the scale sets: Automatic, Manual or Rolling. Default
	// Manual.
	UpgradeMode string
}

// FleetSubscription returns the id of the i-th generated subscription.
func FleetSubscription(i int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", i+1) }

// The images the generator assigns, as publisher:offer:sku. RHEL 9 is on
// the documented list of images MSP does not support.
var fleetImages = []struct{ os, publisher, offer, sku string }{
	{"Linux", "Canonical", "ubuntu-24_04-lts", "server"},
	{"Windows", "MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-azure-edition"},
	{"Linux", "RedHat", "RHEL", "9_4"},
	{"Linux", "MicrosoftCBLMariner", "azure-linux-3", "azure-linux-3"},
}

// fleetSettings are the MSP states the generator cycles through: none,
// audit, mixed, enforce, and a linked WireServer profile.
var fleetSettings = []string{
	"",
	`{"enabled":true,"wireServer":{"mode":"Audit"},"imds":{"mode":"Audit"}}`,
	`{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"}}`,
	`{"enabled":true,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Enforce"}}`,
	`{"enabled":false}`,
	"%PROFILE%",
}

// FleetProfileVersion is the profile version id linked by generated
// resources of subscription sub.
func FleetProfileVersion(sub string) string {
	return "/subscriptions/" + sub + "/resourceGroups/fleet-gallery/providers/Microsoft.Compute/galleries/gal/inVMAccessControlProfiles/ws-linux/versions/1.0.0"
}

// AddFleet seeds n resources, deterministically: VMs and, if asked, scale
// sets with their instances, spread over subscriptions, resource groups of
// 500, four regions and the images above, cycling through MSP states (none,
// Audit, Enforce/Audit, Enforce, disabled, a linked WireServer profile on
// Linux) with tags env=prod on even and env=dev on odd resources. It returns
// the ids in the order made. The generated profile version is not seeded: a
// test that writes a profile reference seeds it with SetResource.
func (s *Server) AddFleet(n int, options *FleetOptions) []string {
	o := FleetOptions{Subscriptions: 1, InstancesPerScaleSet: 2, UpgradeMode: "Manual"}
	if options != nil {
		if options.Subscriptions > 0 {
			o.Subscriptions = options.Subscriptions
		}
		if options.InstancesPerScaleSet > 0 {
			o.InstancesPerScaleSet = options.InstancesPerScaleSet
		}
		if options.UpgradeMode != "" {
			o.UpgradeMode = options.UpgradeMode
		}
		o.ScaleSets = options.ScaleSets
	}
	regions := []string{"eastus", "westeurope", "southeastasia", "centralus"}
	ids := make([]string, 0, n)
	for i := 0; len(ids) < n; i++ {
		sub := FleetSubscription(i % o.Subscriptions)
		rg := fmt.Sprintf("fleet-rg-%03d", i/500)
		img := fleetImages[i%len(fleetImages)]
		settings := fleetSettings[i%len(fleetSettings)]
		if settings == "%PROFILE%" {
			if img.os == "Linux" {
				settings = `{"enabled":true,"wireServer":{"inVMAccessControlProfileReferenceId":"` + FleetProfileVersion(sub) + `"},"imds":{"mode":"Audit"}}`
			} else {
				settings = fleetSettings[1]
			}
		}
		env := "prod"
		if i%2 == 1 {
			env = "dev"
		}
		props := vmProps(VM{OSType: img.os, ProxyAgentSettings: settings})
		storage := props["storageProfile"].(map[string]any)
		storage["imageReference"] = map[string]any{"publisher": img.publisher, "offer": img.offer, "sku": img.sku, "version": "latest"}
		base := "/subscriptions/" + sub + "/resourceGroups/" + rg + "/providers/Microsoft.Compute/"
		tags := map[string]any{"env": env}
		if i < o.ScaleSets && len(ids)+1+o.InstancesPerScaleSet <= n {
			id := base + fmt.Sprintf("virtualMachineScaleSets/fleet-ss-%06d", i)
			delete(props, "provisioningState")
			s.put(id, kindScaleSet, map[string]any{
				"id": id, "name": lastSegment(id), "type": "Microsoft.Compute/virtualMachineScaleSets",
				"location": regions[i%len(regions)], "tags": tags,
				"properties": map[string]any{
					"provisioningState":     "Succeeded",
					"upgradePolicy":         map[string]any{"mode": o.UpgradeMode},
					"virtualMachineProfile": props,
				},
			})
			ids = append(ids, id)
			for j := range o.InstancesPerScaleSet {
				ip := vmProps(VM{OSType: img.os, ProxyAgentSettings: settings})
				ip["storageProfile"].(map[string]any)["imageReference"] = storage["imageReference"]
				ip["latestModelApplied"] = true
				iid := id + "/virtualMachines/" + strconv.Itoa(j)
				s.put(iid, kindInstance, map[string]any{
					"id": iid, "name": lastSegment(id) + "_" + strconv.Itoa(j), "instanceId": strconv.Itoa(j),
					"type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines", "location": regions[i%len(regions)],
					"tags": tags, "properties": ip,
				})
				ids = append(ids, iid)
			}
			continue
		}
		id := base + fmt.Sprintf("virtualMachines/fleet-vm-%06d", i)
		s.put(id, kindVM, map[string]any{
			"id": id, "name": lastSegment(id), "type": "Microsoft.Compute/virtualMachines",
			"location": regions[i%len(regions)], "tags": tags, "properties": props,
		})
		ids = append(ids, id)
	}
	return ids
}
