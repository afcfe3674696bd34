package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/metadatasec/gpa/ebpf"
	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

// TestUpstreamShippedConfigToSuccess: upstream's shipped config file,
// unchanged, runs the agent to SUCCESS, deciding as upstream's Shadow does
// (legacy decides).
//
// The file names the real folders and no cgroup, so the agent runs in a
// mount and cgroup namespace of its own, started inside the test's child
// cgroup: /var/log and /var/lib are the test's folders there, and the
// cgroup2 mount it finds is that namespace's root, the child cgroup. The
// programs never attach at the root of the real hierarchy, and nothing
// outside the namespaces changes.
func TestUpstreamShippedConfigToSuccess(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	upstream, err := os.ReadFile(filepath.Join("..", "..", "agent", "testdata", "upstream", "GuestProxyAgent.linux.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(env.Dir, "upstream", "proxy-agent.json")
	varLog, varLib := filepath.Join(env.Dir, "upstream", "var-log"), filepath.Join(env.Dir, "upstream", "var-lib")
	for _, d := range []string{varLog, varLib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(cfgPath, upstream, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt, err := ebpf.CgroupV2Root()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(env.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	// sh runs in the child cgroup from its first instruction; unshare
	// without --fork keeps the pid, so cmd.Process is the agent.
	script := `set -e
umount -l -a -t cgroup2
mount -t cgroup2 none "$1"
mount --bind "$2" /var/log
mount --bind "$3" /var/lib
exec "$4" -c "$5"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--cgroup", "--", "sh", "-c", script, "sh", mnt, varLog, varLib, env.AgentBinary(), cfgPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})

	// cloud-init's call, with upstream's file: exit 0 once provisioned.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	st, err := exec.CommandContext(ctx, env.AgentBinary(), "-c", cfgPath, "--status", "--wait", "30").CombinedOutput()
	if err != nil {
		t.Fatalf("--status --wait 30 with upstream's file: %v, last output %q\nagent:\n%s", err, st[max(0, len(st)-300):], out.String())
	}
	statusPath := filepath.Join(varLog, "azure-proxy-agent", "status.json")
	var s *status.AggregateStatus
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if s, err = status.ReadFile(statusPath); err == nil && agenttest.Succeeded(s) {
			break
		}
	}
	if s == nil || !agenttest.Succeeded(s) {
		t.Fatalf("status.json never said SUCCESS (%v)\nagent:\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(varLib, "azure-proxy-agent", "keys", "provisioned.tag")); err != nil {
		t.Errorf("keys not in upstream's latchKeyFolder: %v", err)
	}
	// Where the programs went: the child cgroup, never the real root.
	attached := func(dir string) int {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: cebpf.AttachCGroupInet4Connect})
		if err != nil {
			t.Fatalf("query %s: %v", dir, err)
		}
		return len(res.Programs)
	}
	if n := attached(env.Cgroup); n != 1 {
		t.Errorf("connect4 programs on the child cgroup: %d, want 1", n)
	}
	if n := attached(mnt); n != 0 {
		t.Errorf("connect4 programs on the cgroup root: %d, want 0", n)
	}
	// The redirect and the rules work: nobody's allowed path answers, the
	// token path is refused and never reaches the host.
	if r := env.Get(t, agenttest.Nobody, imdsInstance, metadataHeader); r.Status != 200 {
		t.Errorf("nobody's /metadata/instance: %v", r)
	}
	m := mark(t, env)
	if r := env.Get(t, agenttest.Nobody, "http://169.254.169.254"+tokenPath+tokenQuery, metadataHeader); r.Status != 403 || len(forwarded(env, m)) != 0 {
		t.Errorf("nobody's token path: %v, host saw %d", r, len(forwarded(env, m)))
	}
	// canonicalRequestMode Shadow: legacy decides, as upstream.
	agentLog, _ := os.ReadFile(filepath.Join(varLog, "azure-proxy-agent", "ProxyAgent.log"))
	if !strings.Contains(string(agentLog), "differs from upstream") {
		t.Errorf("the start-up log does not list the differences from upstream")
	}
	select {
	case <-done:
		t.Fatalf("the agent exited:\n%s", out.String())
	default:
	}
}
