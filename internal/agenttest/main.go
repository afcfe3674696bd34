package agenttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/sandbox"
)

// envCaller marks a subprocess that runs the Go client instead of tests.
const envCaller = "GPA_AGENTTEST_CALLER"

// agentPackage is built once per test binary run.
const agentPackage = "github.com/metadatasec/gpa/examples/azure-proxy-agent"

// suite is what Main prepares once for every Env of the process: where the
// agent binary and the caller copy live, and why the namespace could not be
// set up, if it could not. It is written before m.Run and read after, so it
// needs no lock; the build is guarded by its own Once.
type suite struct {
	dir      string // world-readable: nobody runs the caller from here
	setupErr error

	buildOnce sync.Once
	agentBin  string
	callerBin string
	buildErr  error
}

var current *suite

// Main is the body of a TestMain. It runs the caller when the process is
// one, re-executes the tests inside a fresh network namespace when it runs
// as root, and otherwise just runs them (each test then skips, or fails
// under CI=true, through internal/testenv). It returns the exit code.
func Main(m *testing.M) int {
	if os.Getenv(envCaller) == "1" {
		return runCaller(os.Stdin, os.Stdout)
	}
	if os.Geteuid() != 0 {
		return m.Run()
	}
	if os.Getenv(sandbox.EnvInNetns) != "1" {
		return reexec(m)
	}
	s := &suite{}
	if err := sandbox.SetupLoopback(context.Background()); err != nil {
		s.setupErr = err
	}
	dir, err := os.MkdirTemp("", "gpa-agenttest-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		s.setupErr = errors.Join(s.setupErr, err)
	}
	s.dir = dir
	current = s
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	return code
}

// reexec runs this test binary again with the same arguments inside a new
// network namespace and passes its output and exit code through.
func reexec(m *testing.M) int {
	cmd, err := sandbox.Command(context.Background(), os.Args...)
	if err != nil {
		// Run here instead, and let every New report why it cannot.
		current = &suite{setupErr: err}
		return m.Run()
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "agenttest: re-exec in a network namespace:", err)
		return 1
	}
	return 0
}

// build compiles the agent and copies the test binary (the caller), once.
func (s *suite) build() error {
	s.buildOnce.Do(func() {
		s.agentBin = filepath.Join(s.dir, "azure-proxy-agent")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", s.agentBin, agentPackage).CombinedOutput()
		if err != nil {
			s.buildErr = fmt.Errorf("go build %s: %v\n%s", agentPackage, err, out)
			return
		}
		s.callerBin = filepath.Join(s.dir, "caller")
		s.buildErr = copyFile(s.callerBin, os.Args[0], 0o755)
	})
	return s.buildErr
}

func copyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
