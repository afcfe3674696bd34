// Command msp-keyreset resets the latched MSP key of a VM or of scale-set
// instances by raising keyIncarnationId through Azure Resource Manager, and
// optionally waits until the guest agent reports the new key latched.
//
//	msp-keyreset --vm /subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME [--wait-guest] [--dry-run]
//	msp-keyreset --vmss /subscriptions/S/.../virtualMachineScaleSets/NAME (--instance ID | --all-instances) [--wait-guest] [--dry-run]
//
// Credentials come from azidentity's DefaultAzureCredential (environment,
// workload identity, managed identity, Azure CLI).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/metadatasec/gpa/arm"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, defaultClient))
}

// newClientFunc builds the ARM client for a subscription; tests point it at
// armtest.
type newClientFunc func(subscriptionID string) (*arm.Client, error)

func defaultClient(subscriptionID string) (*arm.Client, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("no Azure credential (az login, or set AZURE_CLIENT_ID and friends): %w", err)
	}
	return arm.NewClient(subscriptionID, cred, nil)
}

type options struct {
	vm, vmss, instance string
	all, waitGuest     bool
	dryRun             bool
	timeout            time.Duration
	guestInterval      time.Duration
	pollInterval       time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, newClient newClientFunc) int {
	fs := flag.NewFlagSet("msp-keyreset", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.vm, "vm", "", "resource id of the virtual machine")
	fs.StringVar(&o.vmss, "vmss", "", "resource id of the (Uniform) scale set")
	fs.StringVar(&o.instance, "instance", "", "instance id in the scale set")
	fs.BoolVar(&o.all, "all-instances", false, "reset every instance of the scale set")
	fs.BoolVar(&o.waitGuest, "wait-guest", false, "wait until the guest agent reports the new key latched")
	fs.BoolVar(&o.dryRun, "dry-run", false, "read the current value and print the request, change nothing")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	fs.DurationVar(&o.guestInterval, "guest-interval", 30*time.Second, "how often to read the instance view with --wait-guest")
	fs.DurationVar(&o.pollInterval, "poll-interval", 5*time.Second, "how often to poll the update operation")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if (o.vm == "") == (o.vmss == "") || (o.vmss != "" && (o.instance == "") == !o.all) || (o.vm != "" && (o.instance != "" || o.all)) {
		fmt.Fprintln(stderr, "msp-keyreset: give --vm ID, or --vmss ID with exactly one of --instance N or --all-instances")
		return exitUsage
	}
	id := o.vm + o.vmss
	rid, err := azarm.ParseResourceID(id)
	if err != nil {
		fmt.Fprintf(stderr, "msp-keyreset: %q is not a resource id: %v\n", id, err)
		return exitUsage
	}
	wantType := "Microsoft.Compute/virtualMachines"
	if o.vmss != "" {
		wantType = "Microsoft.Compute/virtualMachineScaleSets"
	}
	if !strings.EqualFold(rid.ResourceType.String(), wantType) {
		fmt.Fprintf(stderr, "msp-keyreset: %s is a %s, want a %s\n", id, rid.ResourceType, wantType)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	client, err := newClient(rid.SubscriptionID)
	if err != nil {
		fmt.Fprintln(stderr, "msp-keyreset:", err)
		return exitError
	}
	r := &resetter{c: client, o: o, rg: rid.ResourceGroupName, name: rid.Name, out: stdout}
	if o.vm != "" {
		err = r.vm(ctx, id)
	} else {
		instances := []string{o.instance}
		if o.all {
			instances, err = r.listInstances(ctx)
		}
		for _, inst := range instances {
			if err != nil {
				break
			}
			err = r.instance(ctx, id+"/virtualMachines/"+inst, inst)
		}
	}
	if err != nil {
		report(stderr, err)
		return exitError
	}
	return exitOK
}

// report prints the error and, for MSP settings errors, the guide's action.
func report(w io.Writer, err error) {
	fmt.Fprintln(w, "msp-keyreset:", err)
	var e *arm.Error
	if errors.As(err, &e) && e.Action != "" {
		fmt.Fprintln(w, "action:", e.Action)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == 403 {
		fmt.Fprintln(w, "action: the identity needs Microsoft.Compute/virtualMachines/write on the resource (for example Virtual Machine Contributor)")
	}
}

type resetter struct {
	c        *arm.Client
	o        options
	rg, name string
	out      io.Writer
}

func (r *resetter) listInstances(ctx context.Context) ([]string, error) {
	var ids []string
	pager := r.c.NewListScaleSetInstancesPager(r.rg, r.name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, inst := range page.Value {
			ids = append(ids, inst.InstanceID)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("scale set %s has no instances", r.name)
	}
	return ids, nil
}

func current(s *arm.ProxyAgentSettings) int32 {
	if s == nil || s.KeyIncarnationID == nil {
		return 0
	}
	return *s.KeyIncarnationID
}

func (r *resetter) dryRun(id, verb string, cur int32, etag azcore.ETag) {
	fmt.Fprintf(r.out, "dry run: %s: keyIncarnationId is %d\n", id, cur)
	fmt.Fprintf(r.out, "would send: %s %s?api-version=%s\n  If-Match: %s\n  {\"properties\":{\"securityProfile\":{\"proxyAgentSettings\":{\"keyIncarnationId\":%d}}}}\n",
		verb, id, arm.DefaultComputeAPIVersion, etag, cur+1)
}

func (r *resetter) vm(ctx context.Context, id string) error {
	if r.o.dryRun {
		vm, err := r.c.GetVirtualMachine(ctx, r.rg, r.name, nil)
		if err != nil {
			return err
		}
		r.dryRun(id, "PATCH", current(vm.ProxyAgentSettings()), vm.ETag)
		return nil
	}
	reset, err := r.c.BeginResetVirtualMachineKey(ctx, r.rg, r.name, nil)
	if err != nil {
		return err
	}
	return follow(ctx, r, r.name, reset, func(ctx context.Context) (arm.GuestState, error) {
		g, err := r.c.GetVirtualMachineGuestState(ctx, r.rg, r.name, nil)
		return g.GuestState, err
	})
}

func (r *resetter) instance(ctx context.Context, id, inst string) error {
	if r.o.dryRun {
		vm, err := r.c.GetScaleSetInstance(ctx, r.rg, r.name, inst, nil)
		if err != nil {
			return err
		}
		r.dryRun(id, "PUT (the body read, with only this field raised)", current(vm.ProxyAgentSettings()), vm.ETag)
		return nil
	}
	reset, err := r.c.BeginResetScaleSetInstanceKey(ctx, r.rg, r.name, inst, nil)
	if err != nil {
		return err
	}
	return follow(ctx, r, r.name+"/"+inst, reset, func(ctx context.Context) (arm.GuestState, error) {
		g, err := r.c.GetScaleSetInstanceGuestState(ctx, r.rg, r.name, inst, nil)
		return g.GuestState, err
	})
}

// follow waits for the update a reset started and, with --wait-guest, for
// the guest to report the new key latched; read fetches the guest state of
// the resource labelled label.
func follow[T any](ctx context.Context, r *resetter, label string, reset arm.KeyReset[T], read func(context.Context) (arm.GuestState, error)) error {
	fmt.Fprintf(r.out, "%s: keyIncarnationId %d -> %d, waiting for the update\n", label, reset.Previous, reset.KeyIncarnationID)
	if _, err := reset.Poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: r.o.pollInterval}); err != nil {
		return arm.MapError(err)
	}
	fmt.Fprintf(r.out, "%s: update done\n", label)
	if !r.o.waitGuest {
		return nil
	}
	want := reset.KeyIncarnationID
	fmt.Fprintf(r.out, "waiting for the guest to latch incarnation %d\n", want)
	g, err := arm.WaitForGuestKeyIncarnation(ctx, want, read, &arm.WaitOptions{Interval: r.o.guestInterval})
	if err != nil {
		return fmt.Errorf("guest did not report incarnation %d latched: %w", want, err)
	}
	fmt.Fprintf(r.out, "guest latched incarnation %d: %s (%s)\n", *g.KeyIncarnationID, g.SecureChannelState, g.Status)
	return nil
}
