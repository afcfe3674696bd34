// Command azure-proxy-agent is the MSP guest agent: a drop-in for the
// upstream Linux agent, built on package agent. Its usage is below; the
// demo is a program of its own, examples/msp-demo.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/agent"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], start, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type cli struct {
	config   string
	status   bool
	wait     time.Duration
	version  bool
	command  string
	rest     []string
	waitSeen bool
}

// parseArgs reads upstream's flags (-c/--config, -s/--status, -w/--wait,
// -v/--version) and one command.
func parseArgs(args []string) (*cli, error) {
	c := &cli{}
	fs := flag.NewFlagSet("azure-proxy-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var wait uint
	for _, n := range []string{"c", "config"} {
		fs.StringVar(&c.config, n, "", "")
	}
	for _, n := range []string{"s", "status"} {
		fs.BoolVar(&c.status, n, false, "")
	}
	for _, n := range []string{"w", "wait"} {
		fs.UintVar(&wait, n, 0, "")
	}
	for _, n := range []string{"v", "version"} {
		fs.BoolVar(&c.version, n, false, "")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fs.Visit(func(f *flag.Flag) { c.waitSeen = c.waitSeen || f.Name == "w" || f.Name == "wait" })
	c.wait = time.Duration(wait) * time.Second
	if c.command = fs.Arg(0); c.command == "uninstall" {
		c.rest = fs.Args()[1:]
		return c, nil
	}
	switch {
	case fs.NArg() > 1:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(1))
	case c.waitSeen && !c.status:
		return nil, errors.New("--wait requires --status")
	}
	switch c.command {
	case "", "console", "demo":
	case "help":
		return nil, flag.ErrHelp
	default:
		return nil, fmt.Errorf("unknown command %q", c.command)
	}
	return c, nil
}

const usage = `usage:
  azure-proxy-agent [-c CONFIG]                      run as the service
  azure-proxy-agent [-c CONFIG] console              run in the foreground (Enter stops it)
  azure-proxy-agent [-c CONFIG] --status [--wait N]  provisioning state: exit 0 done, 1 not done, 2 done with errors
  azure-proxy-agent [-c CONFIG] uninstall [--purge]  stop, detach and unpin the programs, remove the files
  azure-proxy-agent --version

The demo of the whole protocol on a simulated host is its own program:
  sudo go run ./examples/msp-demo
`

func run(ctx context.Context, args []string, start time.Time, stdin io.Reader, stdout, stderr io.Writer) int {
	c, err := parseArgs(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "azure-proxy-agent: %v\n%s", err, usage)
		return 2
	case c.version:
		fmt.Fprintln(stdout, version)
		return 0
	case c.status:
		return runStatus(ctx, c, start, stdout, stderr)
	case c.command == "uninstall":
		return agent.UninstallCommand(ctx, c.rest, &agent.UninstallOptions{ConfigPath: c.config}, stdout, stderr)
	case c.command == "demo":
		fmt.Fprintln(stderr, "The demo moved to its own program: sudo go run ./examples/msp-demo")
		return 2
	}
	file, err := agent.FindConfigFile(c.config)
	if err != nil {
		fmt.Fprintln(stderr, "azure-proxy-agent:", err)
		return 1
	}
	cfg, err := file.Config()
	if err != nil {
		fmt.Fprintln(stderr, "azure-proxy-agent:", err)
		return 1
	}
	cfg.Version = version
	if c.command == "console" {
		ctx2, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			bufio.NewReader(stdin).ReadString('\n')
			cancel()
		}()
		ctx = ctx2
		fmt.Fprintln(stdout, "Press Enter to stop.")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := agent.New(cfg, &agent.Options{Logger: logger, Start: start})
	if err == nil {
		err = a.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(stderr, "azure-proxy-agent:", err)
		return 1
	}
	return 0
}

// runStatus is the cloud-init contract: poll /provision until finished or
// the wait (counted from process start) is up. stdout gets what upstream
// prints, byte for byte; our explanation goes to stderr.
func runStatus(ctx context.Context, c *cli, start time.Time, stdout, stderr io.Writer) int {
	addr := msp.ProxyAddr.String()
	if f, err := agent.FindConfigFile(c.config); err == nil {
		addr = f.ListenAddress
	}
	res, _ := status.WaitProvisioned(ctx, &status.WaitOptions{Addr: addr, Wait: c.wait, Start: start,
		OnQueryError: func(err error) { fmt.Fprint(stdout, status.QueryErrorLine(err)) }})
	fmt.Fprint(stdout, res.Stdout())
	if res.ExitCode() == status.ExitNotFinished {
		fmt.Fprint(stderr, res.Report())
	}
	return res.ExitCode()
}
