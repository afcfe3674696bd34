// Command azure-proxy-agent is the MSP guest agent: a drop-in for the
// upstream Linux agent built on this module's packages.
//
//	azure-proxy-agent                      run as the service (systemd)
//	azure-proxy-agent console              run in the foreground until Enter or a signal
//	azure-proxy-agent --status [--wait N]  report provisioning (cloud-init runs this)
//	azure-proxy-agent --version
//	azure-proxy-agent demo                 the whole protocol on a simulated host (root)
//
// -c/--config PATH selects the configuration (default /etc/azure/proxy-agent.json).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

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

func parseArgs(args []string) (*cli, error) {
	c := &cli{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if c.command == "demo" || c.command == demoCallerCommand {
			c.rest = append(c.rest, a) // the subcommand's own arguments
			continue
		}
		value := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch a {
		case "-c", "--config":
			v, err := value()
			if err != nil {
				return nil, err
			}
			c.config = v
		case "-s", "--status":
			c.status = true
		case "-w", "--wait":
			v, err := value()
			if err != nil {
				return nil, err
			}
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--wait takes whole seconds, not %q", v)
			}
			c.wait, c.waitSeen = time.Duration(n)*time.Second, true
		case "-v", "--version":
			c.version = true
		case "-h", "--help":
			return nil, errHelp
		default:
			if len(a) > 0 && a[0] == '-' {
				return nil, fmt.Errorf("unknown flag %s", a)
			}
			if c.command != "" {
				c.rest = append(c.rest, a)
				continue
			}
			c.command = a
		}
	}
	if c.waitSeen && !c.status {
		return nil, errors.New("--wait requires --status")
	}
	switch c.command {
	case "", "console", "demo", demoCallerCommand:
	default:
		return nil, fmt.Errorf("unknown command %q", c.command)
	}
	return c, nil
}

var errHelp = errors.New("help")

const usage = `usage:
  azure-proxy-agent [-c CONFIG]                      run as the service
  azure-proxy-agent [-c CONFIG] console              run in the foreground (Enter stops it)
  azure-proxy-agent [-c CONFIG] --status [--wait N]  provisioning state: exit 0 done, 1 not done, 2 done with errors
  azure-proxy-agent --version
  azure-proxy-agent demo [--audit-log FILE]          the protocol end to end on a simulated host (needs root);
                                                     --audit-log keeps the connection log for msp-policy
`

func run(ctx context.Context, args []string, start time.Time, stdin io.Reader, stdout, stderr io.Writer) int {
	c, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "azure-proxy-agent: %v\n%s", err, usage)
		return 2
	}
	switch {
	case c.version:
		fmt.Fprintln(stdout, version)
		return 0
	case c.status:
		return runStatus(ctx, c, start, stdout)
	case c.command == "demo":
		return runDemo(ctx, c.rest, stdout, stderr)
	case c.command == demoCallerCommand:
		return runDemoCaller(ctx, c.rest, stdout, stderr)
	}
	cfg, err := loadConfigFor(c.config)
	if err != nil {
		fmt.Fprintln(stderr, "azure-proxy-agent:", err)
		return 1
	}
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
	if err := runAgent(ctx, cfg, runOptions{Start: start, Stderr: stderr}); err != nil {
		fmt.Fprintln(stderr, "azure-proxy-agent:", err)
		return 1
	}
	return 0
}

// loadConfigFor finds the configuration as upstream does: the given path,
// else /etc/azure/proxy-agent.json, else proxy-agent.json beside the binary.
func loadConfigFor(path string) (*Config, error) {
	if path != "" {
		return LoadConfig(path)
	}
	if _, err := os.Stat(DefaultConfigPath); err == nil {
		return LoadConfig(DefaultConfigPath)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "proxy-agent.json")
		if _, err := os.Stat(p); err == nil {
			return LoadConfig(p)
		}
	}
	return LoadConfig(DefaultConfigPath)
}

// runStatus is the cloud-init contract of gpa-protocol §7.4: poll
// /provision until finished or the wait (counted from process start) is up.
func runStatus(ctx context.Context, c *cli, start time.Time, stdout io.Writer) int {
	addr := status.DefaultAgentAddr
	if cfg, err := loadConfigFor(c.config); err == nil {
		addr = cfg.ListenAddress
	}
	res, _ := status.WaitProvisioned(ctx, &status.WaitOptions{Addr: addr, Wait: c.wait, Start: start})
	if r := res.Report(); r != "" {
		if !strings.HasSuffix(r, "\n") {
			r += "\n"
		}
		fmt.Fprint(stdout, r)
	}
	return res.ExitCode()
}
