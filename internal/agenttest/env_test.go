package agenttest

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/metadatasec/gpa/msp"
)

// An Env with a pinned, provisioned agent leaves nothing behind: the agent
// process, the cgroup, the bpffs mount and the folders are gone when the
// test using it ends.
func TestEnvCleansUp(t *testing.T) {
	var env *Env
	var pid int
	t.Run("use", func(t *testing.T) {
		env = New(t, &Options{Pin: true, Rules: map[msp.Endpoint]*msp.AuthorizationItem{
			msp.EndpointIMDS: {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "cleanup"}}})
		a := env.StartProvisioned(t)
		pid = a.PID
		if r := env.Get(t, Nobody, "http://169.254.169.254/metadata/instance", map[string]string{"Metadata": "true"}); r.Status != 200 {
			t.Errorf("caller: %v", r)
		}
		if rss, err := a.RSSKiB(); err != nil || rss <= 0 {
			t.Errorf("RSSKiB: %d, %v", rss, err)
		}
	})
	if env == nil {
		t.Fatal("no env")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("agent pid %d still exists: %v", pid, err)
	}
	for _, p := range []string{env.Cgroup, env.PinDir, env.Dir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), env.PinDir) {
		t.Errorf("bpffs still mounted on %s", env.PinDir)
	}
}
