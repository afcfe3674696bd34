// Command gpa-bench measures the agent side by side with a direct client and
// with nginx as a plain reverse proxy, in one run, inside a network
// namespace of its own. See doc.go and README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/metadatasec/gpa/internal/sandbox"
)

// Hidden subcommands the harness starts itself as.
const (
	cmdInner = "inner" // the measurement, inside the namespace
	cmdLoad  = "load"  // a load generator process
	cmdRelay = "relay" // the relay row's proxy
)

// envAgentBinary passes the built agent from the outer process to the inner.
const envAgentBinary = "GPA_BENCH_AGENT"

// envAgentRunBinary, when set, is the agent that runs (a profiling build);
// envAgentBinary is still the one whose size is reported.
const envAgentRunBinary = "GPA_BENCH_AGENT_RUN"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == cmdLoad {
		if err := runLoadCommand(ctx, args[1:], stdout); err != nil {
			fmt.Fprintln(stderr, "gpa-bench load:", err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == cmdRelay {
		if err := runRelayCommand(ctx, args[1:], stderr); err != nil {
			fmt.Fprintln(stderr, "gpa-bench relay:", err)
			return 1
		}
		return 0
	}
	inner := len(args) > 0 && args[0] == cmdInner
	if inner {
		args = args[1:]
	}
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, `gpa-bench needs root: it installs nginx if missing, creates a network namespace
(169.254.169.254 and 168.63.129.16 on its own loopback; nothing leaves the machine),
two child cgroups, and loads the agent's eBPF programs into one of them only.
  sudo go run ./internal/cmd/gpa-bench`)
		return 2
	}
	if inner {
		if os.Getenv(sandbox.EnvInNetns) != "1" {
			fmt.Fprintln(stderr, "gpa-bench: the inner run starts only through sandbox.Command")
			return 2
		}
		opts.agentBinary = os.Getenv(envAgentBinary)
		opts.agentRunBinary = os.Getenv(envAgentRunBinary)
		if opts.agentRunBinary == "" {
			opts.agentRunBinary = opts.agentBinary
		}
		if err := runBench(ctx, opts, stdout); err != nil {
			fmt.Fprintln(stderr, "gpa-bench:", err)
			return 1
		}
		return 0
	}
	if err := runOuter(ctx, opts, args, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "gpa-bench:", err)
		return 1
	}
	return 0
}

// options are the harness's flags.
type options struct {
	duration    time.Duration
	rounds      int
	soak        int64
	startups    int
	readme      string
	noNginx     bool
	fastIMDS    bool
	agentBinary string
	// agentRunBinary is the binary started; a pprof build with -agent-profile.
	agentRunBinary string
	cpuProfile     string
	// agentGOMAXPROCS, when set, is the agent's GOMAXPROCS (experiments).
	agentGOMAXPROCS int
	// profileNewConn profiles with a new connection per request.
	profileNewConn bool
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("gpa-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "length of each throughput cell (at most 60s)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of each throughput cell, interleaved with the other targets and pooled (1..10)")
	fs.Int64Var(&o.soak, "soak", 1_000_000, "requests through the agent for the memory-growth check (at most 5,000,000)")
	fs.IntVar(&o.startups, "startups", 5, "agent starts timed from exec to SUCCESS (1..20)")
	fs.StringVar(&o.readme, "readme", "", "write the result tables into this README between the gpa-bench markers")
	fs.BoolVar(&o.noNginx, "no-nginx", false, "skip the nginx rows, the goals judged against nginx, and the apt-get install")
	fs.BoolVar(&o.fastIMDS, "fast-imds", true, "answer IMDS with a fixed small body instead of msptest's built-in response")
	fs.StringVar(&o.cpuProfile, "agent-profile", "", "also save a CPU profile of the agent under 8 keep-alive clients to this file (runs an agent built with -tags gpa_pprof)")
	fs.BoolVar(&o.profileNewConn, "agent-profile-newconn", false, "with -agent-profile: a new connection per request instead of keep-alive")
	fs.IntVar(&o.agentGOMAXPROCS, "agent-gomaxprocs", 0, "run the agent with this GOMAXPROCS (0: the agent's default)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case o.duration < 100*time.Millisecond || o.duration > time.Minute:
		err := fmt.Errorf("-duration %v not in 100ms..60s", o.duration)
		fmt.Fprintln(stderr, err)
		return nil, err
	case o.rounds < 1 || o.rounds > 10:
		err := fmt.Errorf("-rounds %d not in 1..10", o.rounds)
		fmt.Fprintln(stderr, err)
		return nil, err
	case o.soak < 0 || o.soak > 5_000_000:
		err := fmt.Errorf("-soak %d not in 0..5000000", o.soak)
		fmt.Fprintln(stderr, err)
		return nil, err
	case o.startups < 1 || o.startups > 20:
		err := fmt.Errorf("-startups %d not in 1..20", o.startups)
		fmt.Fprintln(stderr, err)
		return nil, err
	}
	return o, nil
}

// runOuter does what needs the host's network (apt-get, the Go build), then
// runs the measurement in a fresh network namespace.
func runOuter(ctx context.Context, o *options, args []string, stdout, stderr io.Writer) error {
	if !o.noNginx {
		if err := ensureNginx(ctx, stdout, stderr); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "gpa-bench-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "azure-proxy-agent")
	fmt.Fprintln(stdout, "building the agent (stripped: -trimpath -ldflags='-s -w')")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./examples/azure-proxy-agent")
	build.Dir, err = moduleRoot(ctx)
	if err != nil {
		return err
	}
	build.Stdout, build.Stderr = stderr, stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the agent: %w", err)
	}
	env := []string{envAgentBinary + "=" + bin}
	if o.cpuProfile != "" {
		// A second build with the pprof endpoint; the size is the release one's.
		prof := filepath.Join(dir, "azure-proxy-agent-pprof")
		pb := exec.CommandContext(ctx, "go", "build", "-tags", "gpa_pprof", "-o", prof, "./examples/azure-proxy-agent")
		pb.Dir, pb.Stdout, pb.Stderr = build.Dir, stderr, stderr
		if err := pb.Run(); err != nil {
			return fmt.Errorf("build the profiling agent: %w", err)
		}
		env = append(env, envAgentRunBinary+"="+prof)
		abs, err := filepath.Abs(o.cpuProfile)
		if err != nil {
			return err
		}
		args = replaceFlag(args, "agent-profile", abs)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if o.readme != "" {
		abs, err := filepath.Abs(o.readme)
		if err != nil {
			return err
		}
		args = replaceFlag(args, "readme", abs)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd, err := sandbox.Command(ctx, append([]string{exe, cmdInner}, args...)...)
	if err != nil {
		return err
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// On Ctrl-C the inner run gets SIGINT and cleans up its cgroups.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	return cmd.Run()
}

// replaceFlag sets -name=value in args, replacing any earlier form.
func replaceFlag(args []string, name, value string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		bare := strings.TrimLeft(a, "-")
		switch {
		case bare == name && a != bare:
			i++ // the value follows
		case strings.HasPrefix(bare, name+"=") && a != bare:
		default:
			out = append(out, a)
		}
	}
	return append(out, "-"+name+"="+value)
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run gpa-bench from inside the gpa module")
	}
	return filepath.Dir(mod), nil
}

// nginxPath finds nginx, which Debian installs in /usr/sbin.
func nginxPath() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx not found")
}

// ensureNginx installs Debian's nginx-light (or nginx) when it is missing.
func ensureNginx(ctx context.Context, stdout, stderr io.Writer) error {
	if _, err := nginxPath(); err == nil {
		return nil
	}
	fmt.Fprintln(stdout, "installing nginx with apt-get (nginx-light, else nginx)")
	apt := func(args ...string) error {
		c := exec.CommandContext(ctx, "apt-get", args...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		c.Stdout, c.Stderr = stderr, stderr
		return c.Run()
	}
	if err := apt("update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	if apt("install", "-y", "-qq", "nginx-light") != nil {
		if err := apt("install", "-y", "-qq", "nginx"); err != nil {
			return fmt.Errorf("apt-get install nginx: %w (or run with -no-nginx)", err)
		}
	}
	_, err := nginxPath()
	return err
}
