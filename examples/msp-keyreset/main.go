// Command msp-keyreset resets the latched MSP key of a VM or of scale-set
// instances by raising keyIncarnationId through Azure Resource Manager, and
// optionally waits until the guest agent reports the new key latched.
//
//	msp-keyreset --vm ID [--key-incarnation-id N] [--wait-guest] [--dry-run] [--cloud NAME]
//	msp-keyreset --vmss ID (--instance N | --all-instances) [same flags]
//	msp-keyreset -h
//
// Every flag is checked before the first request. Credentials come from
// azidentity's DefaultAzureCredential (AZURE_* environment variables,
// workload identity, managed identity, az login); without one the command
// says how to provide it and changes nothing. --cloud picks AzurePublic,
// AzureChina or AzureUSGovernment; --arm-endpoint (or
// MSP_KEYRESET_ARM_ENDPOINT) points it at another ARM endpoint, for tests
// against a fake.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/metadatasec/gpa/arm"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// endpointEnv overrides the ARM endpoint, like --arm-endpoint.
const endpointEnv = "MSP_KEYRESET_ARM_ENDPOINT"

const usage = `usage: msp-keyreset --vm ID [flags]
       msp-keyreset --vmss ID (--instance N | --all-instances) [flags]

Resets the latched MSP key of a VM or of scale-set instances by raising
keyIncarnationId (with If-Match, so concurrent resets all take effect),
waits for the update and, with --wait-guest, for the guest to latch it.

Examples:
  msp-keyreset --vm /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME --wait-guest
  msp-keyreset --vmss /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/NAME --all-instances
  msp-keyreset --vm ID --key-incarnation-id 42 --dry-run
  msp-keyreset --vm ID --cloud AzureChina

Credentials: az login, or AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET
(or AZURE_CLIENT_CERTIFICATE_PATH), or a managed identity on the machine.
For tests: --arm-endpoint URL or ` + endpointEnv + `=URL (https, or http on loopback).

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, deps{
		newCredential: defaultCredential,
		getenv:        os.Getenv,
		minPoll:       time.Second,
	}))
}

// deps are what tests replace: the credential, the environment, the
// transport and azcore's minimum poll interval (which it lifts under go
// test only).
type deps struct {
	newCredential func(cloud.Configuration) (azcore.TokenCredential, error)
	getenv        func(string) string
	// transport, when set, carries every ARM request.
	transport policy.Transporter
	minPoll   time.Duration
}

func defaultCredential(c cloud.Configuration) (azcore.TokenCredential, error) {
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions: azcore.ClientOptions{Cloud: c},
	})
}

type options struct {
	vm, vmss, instance string
	all, waitGuest     bool
	dryRun             bool
	key                *int32
	cloudName          string
	endpoint           string
	timeout            time.Duration
	guestInterval      time.Duration
	pollInterval       time.Duration
}

var clouds = map[string]cloud.Configuration{
	"azurepublic":       cloud.AzurePublic,
	"azurechina":        cloud.AzureChina,
	"azureusgovernment": cloud.AzureGovernment,
}

var instanceIDRE = regexp.MustCompile(`^[0-9]+$`)

// parse reads and checks every flag; nothing is sent before it succeeds.
// It returns the options, the resource id and the cloud to use.
func parse(args []string, stdout, stderr io.Writer, d deps) (options, *azarm.ResourceID, cloud.Configuration, int) {
	var o options
	fs := flag.NewFlagSet("msp-keyreset", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// flag calls Usage on every parse error; the synopsis is printed only
	// when asked for, on stdout.
	fs.Usage = func() {}
	help := func() (options, *azarm.ResourceID, cloud.Configuration, int) {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return o, nil, cloud.Configuration{}, exitOK
	}
	fs.StringVar(&o.vm, "vm", "", "resource id of the virtual machine")
	fs.StringVar(&o.vmss, "vmss", "", "resource id of the (Uniform) scale set")
	fs.StringVar(&o.instance, "instance", "", "instance id in the scale set")
	fs.BoolVar(&o.all, "all-instances", false, "reset every instance of the scale set")
	fs.Func("key-incarnation-id", "write this keyIncarnationId instead of the current one plus one; must be above the current one", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("want a non-negative 32-bit integer")
		}
		n32 := int32(n)
		o.key = &n32
		return nil
	})
	fs.BoolVar(&o.waitGuest, "wait-guest", false, "wait until the guest agent reports the new key latched")
	fs.BoolVar(&o.dryRun, "dry-run", false, "read the current value and print the request, change nothing")
	fs.StringVar(&o.cloudName, "cloud", "AzurePublic", "Azure cloud: AzurePublic, AzureChina or AzureUSGovernment")
	fs.StringVar(&o.endpoint, "arm-endpoint", "", "ARM endpoint URL overriding the cloud's, for tests (default $"+endpointEnv+")")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	fs.DurationVar(&o.guestInterval, "guest-interval", 30*time.Second, "how often to read the instance view with --wait-guest")
	fs.DurationVar(&o.pollInterval, "poll-interval", 5*time.Second, "how often to poll the update operation (at least 1s)")
	fail := func(format string, a ...any) (options, *azarm.ResourceID, cloud.Configuration, int) {
		fmt.Fprintf(stderr, "msp-keyreset: "+format+"\n", a...)
		fmt.Fprintln(stderr, "run msp-keyreset -h for the synopsis")
		return o, nil, cloud.Configuration{}, exitUsage
	}
	if len(args) > 0 && args[0] == "help" {
		return help()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return help()
		}
		fmt.Fprintln(stderr, "run msp-keyreset -h for the synopsis")
		return o, nil, cloud.Configuration{}, exitUsage
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case (o.vm == "") == (o.vmss == "") || (o.vmss != "" && (o.instance == "") == !o.all) || (o.vm != "" && (o.instance != "" || o.all)):
		return fail("give --vm ID, or --vmss ID with exactly one of --instance N or --all-instances")
	case o.instance != "" && !instanceIDRE.MatchString(o.instance):
		return fail("--instance %q is not a scale-set instance id (a number)", o.instance)
	case o.timeout <= 0:
		return fail("--timeout must be positive")
	case o.pollInterval < d.minPoll:
		return fail("--poll-interval %v is below the minimum %v", o.pollInterval, d.minPoll)
	case o.guestInterval <= 0:
		return fail("--guest-interval must be positive")
	}
	id := o.vm + o.vmss
	rid, err := azarm.ParseResourceID(id)
	if err != nil {
		return fail("%q is not a resource id: %v", id, err)
	}
	wantType := "Microsoft.Compute/virtualMachines"
	if o.vmss != "" {
		wantType = "Microsoft.Compute/virtualMachineScaleSets"
	}
	if !strings.EqualFold(rid.ResourceType.String(), wantType) {
		return fail("%s is a %s, want a %s", id, rid.ResourceType, wantType)
	}
	c, ok := clouds[strings.ToLower(o.cloudName)]
	if !ok {
		return fail("--cloud %q: want AzurePublic, AzureChina or AzureUSGovernment", o.cloudName)
	}
	if o.endpoint == "" {
		o.endpoint = d.getenv(endpointEnv)
	}
	if o.endpoint != "" {
		if c, err = withEndpoint(c, o.endpoint); err != nil {
			return fail("ARM endpoint: %v", err)
		}
	}
	return o, rid, c, exitOK
}

// withEndpoint returns a copy of c whose ARM endpoint is endpoint. Bearer
// tokens travel in clear over http, so http is accepted on loopback only.
func withEndpoint(c cloud.Configuration, endpoint string) (cloud.Configuration, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return c, fmt.Errorf("%q is not an absolute URL", endpoint)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	default:
		return c, fmt.Errorf("%q: want https, or http on a loopback address", endpoint)
	}
	rm := c.Services[cloud.ResourceManager]
	services := make(map[cloud.ServiceName]cloud.ServiceConfiguration, len(c.Services))
	for k, v := range c.Services {
		services[k] = v
	}
	rm.Endpoint = strings.TrimSuffix(endpoint, "/")
	services[cloud.ResourceManager] = rm
	c.Services = services
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) int {
	o, rid, c, code := parse(args, stdout, stderr, d)
	if rid == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	client, err := newClient(ctx, rid.SubscriptionID, o, c, d)
	if err != nil {
		report(stderr, err)
		return exitError
	}
	r := &resetter{c: client, o: o, rg: rid.ResourceGroupName, name: rid.Name, out: stdout}
	id := o.vm + o.vmss
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

// errNoCredential is reported as one line saying how to sign in, followed
// by azidentity's detail.
type errNoCredential struct{ err error }

func (e errNoCredential) Error() string {
	return "no Azure credential: sign in with 'az login', set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH), or run where a managed identity is assigned\n" + e.err.Error()
}

func (e errNoCredential) Unwrap() error { return e.err }

// newClient builds the ARM client after getting a token once, so that a
// missing credential is reported before anything is read or written.
func newClient(ctx context.Context, subscriptionID string, o options, c cloud.Configuration, d deps) (*arm.Client, error) {
	cred, err := d.newCredential(c)
	if err != nil {
		return nil, errNoCredential{err}
	}
	audience := c.Services[cloud.ResourceManager].Audience
	if _, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{strings.TrimSuffix(audience, "/") + "/.default"}}); err != nil {
		return nil, errNoCredential{err}
	}
	opts := azarm.ClientOptions{ClientOptions: policy.ClientOptions{Cloud: c, Transport: d.transport}}
	if u, err := url.Parse(c.Services[cloud.ResourceManager].Endpoint); err == nil && u.Scheme == "http" {
		// Only reachable through withEndpoint, which keeps http on loopback.
		opts.InsecureAllowCredentialWithHTTP = true
	}
	return arm.NewClient(subscriptionID, cred, &arm.ClientOptions{ClientOptions: opts})
}

// report prints the error once and, for MSP settings errors, the guide's
// action on a line of its own.
func report(w io.Writer, err error) {
	msg := err.Error()
	var e *arm.Error
	if errors.As(err, &e) && e.Action != "" {
		msg = strings.Replace(msg, "; action: "+e.Action, "", 1)
	}
	fmt.Fprintln(w, "msp-keyreset:", msg)
	if e != nil && e.Action != "" {
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

// dryRun prints what a reset would send, after the same check of the value.
func (r *resetter) dryRun(id, verb string, s *arm.ProxyAgentSettings, etag *azcore.ETag) error {
	cur := current(s)
	next := cur + 1
	if r.o.key != nil {
		next = *r.o.key
	}
	if next <= cur {
		return fmt.Errorf("keyIncarnationId %d is not above the current %d: %w", next, cur, arm.ErrKeyIncarnationNotIncreasing)
	}
	var tag azcore.ETag
	if etag != nil {
		tag = *etag
	}
	fmt.Fprintf(r.out, "dry run: %s: keyIncarnationId is %d\n", id, cur)
	fmt.Fprintf(r.out, "would send: %s %s?api-version=%s\n  If-Match: %s\n  {\"properties\":{\"securityProfile\":{\"proxyAgentSettings\":{\"keyIncarnationId\":%d}}}}\n",
		verb, id, arm.DefaultComputeAPIVersion, tag, next)
	return nil
}

func (r *resetter) vm(ctx context.Context, id string) error {
	if r.o.dryRun {
		vm, err := r.c.GetVirtualMachine(ctx, r.rg, r.name, nil)
		if err != nil {
			return err
		}
		return r.dryRun(id, "PATCH", vm.ProxyAgentSettings(), vm.ETag)
	}
	reset, err := r.c.BeginResetVirtualMachineKey(ctx, r.rg, r.name, &arm.ClientBeginResetVirtualMachineKeyOptions{KeyIncarnationID: r.o.key})
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
		return r.dryRun(id, "PUT (the body read, with only this field raised)", vm.ProxyAgentSettings(), vm.ETag)
	}
	reset, err := r.c.BeginResetScaleSetInstanceKey(ctx, r.rg, r.name, inst, &arm.ClientBeginResetScaleSetInstanceKeyOptions{KeyIncarnationID: r.o.key})
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
		return err
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
