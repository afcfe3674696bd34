// Command msp-fleet shows and changes MSP across a fleet of VMs and scale
// sets: it reads them through Azure Resource Graph and writes through Azure
// Resource Manager, in waves.
//
//	msp-fleet inventory  [scope] [--where KQL] [--json|--csv]
//	msp-fleet drift      [scope] --want spec.json [--json]
//	msp-fleet apply      [scope] --want spec.json [--waves 1%,10%,50%,100%] [--max-parallel N]
//	                     [--max-failures K] [--dry-run] [--state FILE] [--gate CMD]
//	msp-fleet reset-keys [scope] --where KQL [same rollout flags]
//
// scope is --subscriptions S1,S2 or --management-group MG (default: every
// subscription the credential can read). --show-query prints the KQL and
// exits. Credentials come from azidentity's DefaultAzureCredential.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/metadatasec/gpa/arm/fleet"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	// exitDrift: drift found resources that differ from the desired state.
	exitDrift = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, defaultCredential))
}

// credentialFunc makes the credential for a cloud; tests substitute a fake.
type credentialFunc func(cloud.Configuration) (azcore.TokenCredential, error)

func defaultCredential(c cloud.Configuration) (azcore.TokenCredential, error) {
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions: policy.ClientOptions{Cloud: c},
	})
	if err != nil {
		return nil, fmt.Errorf("no Azure credential (az login, or set AZURE_CLIENT_ID and friends): %w", err)
	}
	return cred, nil
}

const usage = `usage: msp-fleet <command> [flags]

commands:
  inventory   every VM, scale set and instance with its MSP settings, summary first
  drift       which resources differ from a desired state (exit status 3 if any)
  apply       roll a desired state out in waves, resumable with --state
  reset-keys  reset the latched key of the selected VMs and instances, in waves

run "msp-fleet <command> -h" for its flags
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, newCred credentialFunc) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "msp-fleet: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("msp-fleet "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var g globals
	g.register(fs)
	run := cmd(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: msp-fleet %s [flags]\n\nflags:\n", args[0])
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "msp-fleet %s: unexpected argument %q\n", args[0], fs.Arg(0))
		return exitUsage
	}
	e := &env{g: g, out: stdout, errw: stderr, newCred: newCred}
	code, err := run(ctx, e)
	if err != nil {
		fmt.Fprintf(stderr, "msp-fleet %s: %v\n", args[0], err)
		if code == exitOK {
			code = exitError
		}
	}
	return code
}

// command registers its flags and returns what runs after parsing.
type command func(fs *flag.FlagSet) func(ctx context.Context, e *env) (int, error)

var commands = map[string]command{
	"inventory":  inventoryCmd,
	"drift":      driftCmd,
	"apply":      applyCmd,
	"reset-keys": resetKeysCmd,
}

// globals are the flags every command takes.
type globals struct {
	cloud, endpoint, caFile string
	subscriptions, mg       string
	where                   string
	showQuery               bool
	pageSize                int
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.cloud, "cloud", "AzurePublic", "Azure cloud: AzurePublic, AzureChina or AzureUSGovernment")
	fs.StringVar(&g.endpoint, "arm-endpoint", "", "Resource Manager endpoint overriding the cloud's, for tests (https; Resource Graph is reached there too)")
	fs.StringVar(&g.caFile, "ca-file", "", "PEM file of a CA to trust for --arm-endpoint")
	fs.StringVar(&g.subscriptions, "subscriptions", "", "comma-separated subscription ids to query")
	fs.StringVar(&g.mg, "management-group", "", "management group to query (instead of --subscriptions)")
	fs.StringVar(&g.where, "where", "", "KQL predicate over id, name, type, location, subscriptionId, resourceGroup, tags, properties")
	fs.BoolVar(&g.showQuery, "show-query", false, "print the Resource Graph query (KQL) and exit")
	fs.IntVar(&g.pageSize, "page-size", fleet.DefaultPageSize, "rows per Resource Graph page (1-1000)")
}

type env struct {
	g       globals
	out     io.Writer
	errw    io.Writer
	newCred credentialFunc
}

func (e *env) selection() (fleet.Selection, error) {
	var sel fleet.Selection
	if e.g.subscriptions != "" && e.g.mg != "" {
		return sel, errors.New("give --subscriptions or --management-group, not both")
	}
	for _, s := range strings.Split(e.g.subscriptions, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sel.Subscriptions = append(sel.Subscriptions, s)
		}
	}
	if e.g.mg != "" {
		sel.ManagementGroups = []string{e.g.mg}
	}
	sel.Where = e.g.where
	return sel, nil
}

func (e *env) client() (*fleet.Client, error) {
	var cfg cloud.Configuration
	switch strings.ToLower(e.g.cloud) {
	case "azurepublic", "public":
		cfg = cloud.AzurePublic
	case "azurechina", "china":
		cfg = cloud.AzureChina
	case "azureusgovernment", "usgov":
		cfg = cloud.AzureGovernment
	default:
		return nil, fmt.Errorf("--cloud %q: want AzurePublic, AzureChina or AzureUSGovernment", e.g.cloud)
	}
	var o fleet.Options
	if e.g.endpoint != "" {
		if !strings.HasPrefix(e.g.endpoint, "https://") {
			return nil, fmt.Errorf("--arm-endpoint %q: only https endpoints carry a token", e.g.endpoint)
		}
		rm := cfg.Services[cloud.ResourceManager]
		rm.Endpoint = e.g.endpoint
		cfg = cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.ActiveDirectoryAuthorityHost,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{cloud.ResourceManager: rm}}
	}
	if e.g.caFile != "" {
		pem, err := os.ReadFile(e.g.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate", e.g.caFile)
		}
		o.Transport = &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64,
			Proxy: http.ProxyFromEnvironment,
		}}
	}
	o.ClientOptions = azarm.ClientOptions{ClientOptions: policy.ClientOptions{Cloud: cfg, Transport: o.Transport}}
	cred, err := e.newCred(cfg)
	if err != nil {
		return nil, err
	}
	return fleet.NewClient(cred, &o)
}

// showQuery prints the query when asked; done reports that the command
// should stop there.
func (e *env) showQuery(sel fleet.Selection) (done bool) {
	if e.g.showQuery {
		fmt.Fprintln(e.out, sel.Query())
	}
	return e.g.showQuery
}

func inventoryCmd(fs *flag.FlagSet) func(context.Context, *env) (int, error) {
	asJSON := fs.Bool("json", false, "one JSON object a line")
	asCSV := fs.Bool("csv", false, "CSV with a header line")
	return func(ctx context.Context, e *env) (int, error) {
		if *asJSON && *asCSV {
			return exitUsage, errors.New("give --json or --csv, not both")
		}
		sel, err := e.selection()
		if err != nil {
			return exitUsage, err
		}
		if e.showQuery(sel) {
			return exitOK, nil
		}
		c, err := e.client()
		if err != nil {
			return exitError, err
		}
		// The summary comes first but needs every row: rows go to a spool
		// file meanwhile, so memory stays at one page.
		spool, err := os.CreateTemp("", "msp-fleet-*.spool")
		if err != nil {
			return exitError, err
		}
		defer os.Remove(spool.Name())
		defer spool.Close()
		w := newRowWriter(spool, *asJSON, *asCSV)
		sum := fleet.NewSummary()
		if _, err := c.Inventory(ctx, sel, func(r fleet.Resource) error {
			sum.Add(r)
			return w.write(r)
		}, &fleet.InventoryOptions{PageSize: e.g.pageSize}); err != nil {
			return exitError, err
		}
		if err := w.flush(); err != nil {
			return exitError, err
		}
		switch {
		case *asJSON:
			b, err := json.Marshal(map[string]any{"summary": sum})
			if err != nil {
				return exitError, err
			}
			fmt.Fprintf(e.out, "%s\n", b)
		case *asCSV:
			// Comment lines keep the summary out of the way of CSV readers
			// that skip them.
			for _, l := range sum.Lines() {
				fmt.Fprintln(e.out, "# "+l)
			}
		default:
			for _, l := range sum.Lines() {
				fmt.Fprintln(e.out, l)
			}
			fmt.Fprintln(e.out)
		}
		if _, err := spool.Seek(0, io.SeekStart); err != nil {
			return exitError, err
		}
		_, err = io.Copy(e.out, spool)
		return exitOK, err
	}
}

// rowWriter renders inventory rows as a table, JSON lines or CSV.
type rowWriter struct {
	w           io.Writer
	json, isCSV bool
	csv         *csv.Writer
	header      bool
}

func newRowWriter(w io.Writer, asJSON, asCSV bool) *rowWriter {
	rw := &rowWriter{w: w, json: asJSON, isCSV: asCSV}
	if asCSV {
		rw.csv = csv.NewWriter(w)
	}
	return rw
}

var columns = []string{"name", "kind", "subscription", "resourceGroup", "location", "os", "enabled", "wireServer", "imds", "keyIncarnationId", "image", "imageSupport", "id"}

// jsonRow is one line of --json.
type jsonRow struct {
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	Kind             fleet.Kind        `json:"kind"`
	SubscriptionID   string            `json:"subscriptionId"`
	ResourceGroup    string            `json:"resourceGroup"`
	Location         string            `json:"location"`
	OSType           string            `json:"osType,omitempty"`
	Image            string            `json:"image,omitempty"`
	ImageSupport     string            `json:"imageSupport"`
	Tags             map[string]string `json:"tags,omitempty"`
	Enabled          bool              `json:"enabled"`
	WireServer       string            `json:"wireServer"`
	IMDS             string            `json:"imds"`
	KeyIncarnationID int32             `json:"keyIncarnationId"`
	UpgradeMode      string            `json:"upgradeMode,omitempty"`
	LatestModel      *bool             `json:"latestModelApplied,omitempty"`
}

func endpoints(r fleet.Resource) (ws, imds string) {
	get := func(slot string) string {
		if r.Settings == nil {
			return "-"
		}
		e := r.Settings.WireServer
		if slot == "imds" {
			e = r.Settings.IMDS
		}
		st, ref := fleet.EndpointState(e)
		if ref != "" {
			return fleet.ShortProfile(ref)
		}
		return st
	}
	return get("wireServer"), get("imds")
}

func (rw *rowWriter) write(r fleet.Resource) error {
	ws, imds := endpoints(r)
	if rw.json {
		b, err := json.Marshal(jsonRow{ID: r.ID, Name: r.Name, Kind: r.Kind, SubscriptionID: r.SubscriptionID, ResourceGroup: r.ResourceGroup,
			Location: r.Location, OSType: string(r.OSType), Image: r.Image, ImageSupport: string(r.ImageSupport), Tags: r.Tags,
			Enabled: r.Enabled(), WireServer: ws, IMDS: imds, KeyIncarnationID: r.KeyIncarnationID(), UpgradeMode: r.UpgradeMode, LatestModel: r.LatestModelApplied})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(rw.w, "%s\n", b)
		return err
	}
	cells := []string{r.Name, string(r.Kind), r.SubscriptionID, r.ResourceGroup, r.Location, string(r.OSType),
		strconv.FormatBool(r.Enabled()), ws, imds, strconv.Itoa(int(r.KeyIncarnationID())), r.Image, string(r.ImageSupport), r.ID}
	if rw.isCSV {
		if !rw.header {
			rw.header = true
			if err := rw.csv.Write(columns); err != nil {
				return err
			}
		}
		return rw.csv.Write(cells)
	}
	if !rw.header {
		rw.header = true
		if err := rw.tableLine([]string{"NAME", "KIND", "LOCATION", "OS", "MSP", "WIRESERVER", "IMDS", "KEY", "IMAGE"}); err != nil {
			return err
		}
	}
	msp := "off"
	if r.Enabled() {
		msp = "on"
	}
	img := r.Image
	if r.ImageSupport != fleet.ImageSupported && img != "" {
		img += " (" + string(r.ImageSupport) + ")"
	}
	return rw.tableLine([]string{r.Name, string(r.Kind), r.Location, string(r.OSType), msp, ws, imds, strconv.Itoa(int(r.KeyIncarnationID())), img})
}

// tableLine writes fixed-width columns: a streamed table cannot size its
// columns from rows it has not seen.
func (rw *rowWriter) tableLine(cells []string) error {
	widths := []int{18, 14, 14, 8, 4, 16, 16, 4, 0}
	var b strings.Builder
	for i, c := range cells {
		if w := widths[i]; w > 0 {
			fmt.Fprintf(&b, "%-*s ", w, c)
		} else {
			b.WriteString(c)
		}
	}
	_, err := fmt.Fprintln(rw.w, strings.TrimRight(b.String(), " "))
	return err
}

func (rw *rowWriter) flush() error {
	if rw.csv != nil {
		rw.csv.Flush()
		return rw.csv.Error()
	}
	return nil
}

func readWant(path string) (fleet.Want, error) {
	if path == "" {
		return fleet.Want{}, errors.New("--want spec.json is required")
	}
	f, err := os.Open(path)
	if err != nil {
		return fleet.Want{}, err
	}
	defer f.Close()
	return fleet.ReadWant(f)
}

func driftCmd(fs *flag.FlagSet) func(context.Context, *env) (int, error) {
	wantPath := fs.String("want", "", "desired state (JSON: proxyAgentSettings, optional tags and where)")
	asJSON := fs.Bool("json", false, "one JSON object a line")
	return func(ctx context.Context, e *env) (int, error) {
		sel, err := e.selection()
		if err != nil {
			return exitUsage, err
		}
		want, err := readWant(*wantPath)
		if err != nil {
			return exitUsage, err
		}
		sel = want.Selection(sel)
		if e.showQuery(sel) {
			return exitOK, nil
		}
		c, err := e.client()
		if err != nil {
			return exitError, err
		}
		drifted := 0
		resp, err := c.Inventory(ctx, sel, func(r fleet.Resource) error {
			d := want.Diff(r.Settings)
			if len(d.Differences) == 0 {
				return nil
			}
			drifted++
			if *asJSON {
				b, err := json.Marshal(map[string]any{"id": r.ID, "kind": r.Kind, "differences": d.Differences})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(e.out, "%s\n", b)
				return err
			}
			var parts []string
			for _, x := range d.Differences {
				parts = append(parts, x.String())
			}
			via := ""
			if r.Kind == fleet.KindInstance {
				via = " (through its scale set)"
			}
			_, err := fmt.Fprintf(e.out, "%s %s%s: %s\n", r.Kind, r.ID, via, strings.Join(parts, ", "))
			return err
		}, &fleet.InventoryOptions{PageSize: e.g.pageSize})
		if err != nil {
			return exitError, err
		}
		if !*asJSON {
			fmt.Fprintf(e.out, "%d of %d resources drift\n", drifted, resp.Rows)
		}
		if drifted > 0 {
			return exitDrift, nil
		}
		return exitOK, nil
	}
}

// rolloutFlags are the flags apply and reset-keys share.
type rolloutFlags struct {
	waves        string
	maxParallel  int
	maxFailures  int
	dryRun       bool
	state, gate  string
	pollInterval time.Duration
}

func (rf *rolloutFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&rf.waves, "waves", "100%", "cumulative waves, e.g. 1%,10%,50%,100%")
	fs.IntVar(&rf.maxParallel, "max-parallel", 10, "resources in progress at once")
	fs.IntVar(&rf.maxFailures, "max-failures", 0, "failures tolerated before the rollout stops (-1: never stop)")
	fs.BoolVar(&rf.dryRun, "dry-run", false, "read and print what would be sent, change nothing")
	fs.StringVar(&rf.state, "state", "", "state file: resume from it after a crash or Ctrl-C")
	fs.StringVar(&rf.gate, "gate", "", "shell command run before each wave after the first; a non-zero exit stops the rollout")
	fs.DurationVar(&rf.pollInterval, "poll-interval", 10*time.Second, "how often to poll each update operation")
}

func (rf *rolloutFlags) options(e *env) (*fleet.RolloutOptions, error) {
	waves, err := fleet.ParseWaves(rf.waves)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	o := &fleet.RolloutOptions{Waves: waves, MaxParallel: rf.maxParallel, MaxFailures: rf.maxFailures, DryRun: rf.dryRun,
		StatePath: rf.state, PollFrequency: rf.pollInterval, PageSize: e.g.pageSize,
		OnEvent: func(ev fleet.Event) {
			mu.Lock()
			defer mu.Unlock()
			line := fmt.Sprintf("wave %d: %s %s %s", ev.Wave, ev.Status, ev.Kind, ev.ID)
			if ev.Detail != "" {
				line += ": " + ev.Detail
			}
			if ev.Err != nil {
				line += ": " + ev.Err.Error()
			}
			fmt.Fprintln(e.out, line)
		}}
	if rf.gate != "" {
		o.BeforeWave = func(ctx context.Context, w fleet.Wave) error {
			fmt.Fprintf(e.out, "gate before wave %d/%d: %s\n", w.Index, w.Of, rf.gate)
			cmd := exec.CommandContext(ctx, "sh", "-c", rf.gate)
			cmd.Stdout, cmd.Stderr = e.errw, e.errw
			return cmd.Run()
		}
	}
	return o, nil
}

func report(e *env, resp fleet.RolloutResponse, err error) (int, error) {
	fmt.Fprintf(e.out, "planned %d: written %d, unchanged %d, skipped %d (done earlier), failed %d, dry-run %d; waves completed %d\n",
		resp.Planned, resp.Written, resp.Unchanged, resp.Skipped, resp.Failed, resp.DryRun, resp.Waves)
	if err != nil {
		return exitError, err
	}
	if resp.Failed > 0 {
		return exitError, fmt.Errorf("%d resources failed; run again with the same --state to retry them", resp.Failed)
	}
	return exitOK, nil
}

// rolloutCmd is apply and reset-keys: the rollout flags, the selection,
// --show-query, then start with the client.
func rolloutCmd(fs *flag.FlagSet, prepare func(e *env, sel fleet.Selection) (fleet.Selection, error),
	start func(ctx context.Context, c *fleet.Client, sel fleet.Selection, o *fleet.RolloutOptions) (fleet.RolloutResponse, error)) func(context.Context, *env) (int, error) {
	var rf rolloutFlags
	rf.register(fs)
	return func(ctx context.Context, e *env) (int, error) {
		sel, err := e.selection()
		if err != nil {
			return exitUsage, err
		}
		if sel, err = prepare(e, sel); err != nil {
			return exitUsage, err
		}
		if e.showQuery(sel) {
			return exitOK, nil
		}
		o, err := rf.options(e)
		if err != nil {
			return exitUsage, err
		}
		c, err := e.client()
		if err != nil {
			return exitError, err
		}
		resp, err := start(ctx, c, sel, o)
		return report(e, resp, err)
	}
}

func applyCmd(fs *flag.FlagSet) func(context.Context, *env) (int, error) {
	wantPath := fs.String("want", "", "desired state (JSON: proxyAgentSettings, optional tags and where)")
	var (
		want fleet.Want
		orig fleet.Selection
	)
	return rolloutCmd(fs, func(_ *env, sel fleet.Selection) (fleet.Selection, error) {
		var err error
		want, err = readWant(*wantPath)
		orig = sel
		// What --show-query prints: Apply narrows the selection by the
		// desired state itself.
		return want.Selection(sel), err
	}, func(ctx context.Context, c *fleet.Client, _ fleet.Selection, o *fleet.RolloutOptions) (fleet.RolloutResponse, error) {
		return c.Apply(ctx, orig, want, o)
	})
}

func resetKeysCmd(fs *flag.FlagSet) func(context.Context, *env) (int, error) {
	all := fs.Bool("all", false, "allow an empty --where: reset every key in the scope")
	return rolloutCmd(fs, func(_ *env, sel fleet.Selection) (fleet.Selection, error) {
		if strings.TrimSpace(sel.Where) == "" && !*all {
			return sel, errors.New("--where is required (or --all to reset every key in the scope)")
		}
		return sel, nil
	}, func(ctx context.Context, c *fleet.Client, sel fleet.Selection, o *fleet.RolloutOptions) (fleet.RolloutResponse, error) {
		return c.ResetKeys(ctx, sel, o)
	})
}
