package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/internal/testenv"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/status"
)

const (
	imdsInstance = "http://169.254.169.254/metadata/instance?api-version=2021-02-01"
	imdsToken    = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
	wsGoalState  = "http://168.63.129.16/machine?comp=goalstate"
)

var metadataHeader = map[string]string{"Metadata": "true"}

// rules allows /metadata/instance to root and nobody and denies everything
// else on IMDS; WireServer allows by default (it still requires root).
func rules(mode msp.Mode) map[msp.Endpoint]*msp.AuthorizationItem {
	return map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointIMDS: {Mode: mode, DefaultAccess: msp.AccessDeny, ID: "e2e-imds", Rules: &msp.AccessControlRules{
			Privileges:      []msp.Privilege{{Name: "instance", Path: "/metadata/instance"}},
			Roles:           []msp.Role{{Name: "readers", Privileges: []string{"instance"}}},
			Identities:      []msp.Identity{{Name: "root", UserName: "root"}, {Name: "nobody", UserName: "nobody"}},
			RoleAssignments: []msp.RoleAssignment{{Role: "readers", Identities: []string{"root", "nobody"}}},
		}},
		msp.EndpointWireServer: {Mode: mode, DefaultAccess: msp.AccessAllow, ID: "e2e-wireserver"},
	}
}

// First boot: --status says not finished before the agent runs, then
// SUCCESS; status.json names the latched key and the modes.
func TestFirstBootToSuccess(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	if code, out := env.StatusCLI(t, 0); code != 1 {
		t.Errorf("--status before the agent runs: exit %d %q, want 1", code, out)
	}
	a := env.StartAgent(t)
	code, out := env.StatusCLI(t, 10)
	if code != 0 {
		t.Fatalf("--status --wait 10: exit %d %q\n%s", code, out, a.Output())
	}
	key, ok := env.Host.LatchedKey()
	if !ok {
		t.Fatal("the host has no latched key after SUCCESS")
	}
	// The overall state and the key's states are written by different
	// components, so wait for both rather than the first SUCCESS.
	s := env.WaitStatus(t, 5*time.Second, "SUCCESS with the latched key", func(s *status.AggregateStatus) bool {
		return agenttest.Succeeded(s) && s.ProxyAgentStatus.KeyLatchStatus.States["keyGuid"] == key.GUID
	})
	p := s.ProxyAgentStatus
	for name, m := range map[string]status.ModuleStatus{"keyLatch": p.KeyLatchStatus, "ebpf": p.EBPFProgramStatus, "listener": p.ProxyListenerStatus} {
		if m.Status != msp.ModuleRunning {
			t.Errorf("%s: %s %q", name, m.Status, m.Message)
		}
	}
	st := p.KeyLatchStatus.States
	if st["keyGuid"] != key.GUID || st["secureChannelState"] != "WireServer Enforce -  IMDS Enforce - HostGA Enforce" ||
		// Ids as upstream shows them: <id>-useLocalFileRules-<bool>, HostGA's raw.
		st["imdsRuleId"] != "e2e-imds-useLocalFileRules-false" || st["wireServerRuleId"] != "e2e-wireserver-useLocalFileRules-false" || st["hostGARuleId"] != "e2e-wireserver" {
		t.Errorf("keyLatchStatus.states = %v, want key %s and the Enforce state", st, key.GUID)
	}
	if _, err := os.Stat(env.KeyDir + "/provisioned.tag"); err != nil {
		t.Error(err)
	}
}

// outcome is what one caller saw, and what the host and the audit log saw.
type outcome struct {
	Status   int
	HostSaw  int
	Claims   string
	Decision string
}

type call struct {
	name string
	uid  uint32
	curl bool
	url  string
	want outcome
}

func (c call) run(t *testing.T, env *agenttest.Env) {
	t.Helper()
	m := mark(t, env)
	var res agenttest.Result
	if c.curl {
		res = env.Curl(t, c.uid, "-H", "Metadata: true", c.url)
	} else {
		res = env.Get(t, c.uid, c.url, metadataHeader)
	}
	got := outcome{Status: res.Status, Decision: lastDecision(t, env, m, c.url)}
	fw := forwarded(env, m)
	got.HostSaw = len(fw)
	if len(fw) > 0 {
		got.Claims, _ = fw[len(fw)-1].Get("x-ms-azure-host-claims")
	}
	checkSigned(t, c.name, fw)
	if diff := cmp.Diff(c.want, got); diff != "" {
		t.Errorf("%s (-want +got):\n%s%s", c.name, diff, res.Err)
	}
}

// IMDS and WireServer requests from both clients and both users, allowed,
// denied and audited, in Audit and then in Enforce; every request that
// reaches the host carries a signature the host verifies.
func TestRequestsAllowedDeniedAudited(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeAudit)})
	env.StartProvisioned(t)
	root, nonRoot := msp.ClaimsHeaderRoot, msp.ClaimsHeaderNonRoot
	for _, c := range []call{
		{"root instance", agenttest.Root, false, imdsInstance, outcome{200, 1, root, "allow"}},
		{"nobody instance curl", agenttest.Nobody, true, imdsInstance, outcome{200, 1, nonRoot, "allow"}},
		{"nobody token audited", agenttest.Nobody, false, imdsToken, outcome{200, 1, nonRoot, "audit"}},
		{"nobody wireserver", agenttest.Nobody, false, wsGoalState, outcome{403, 0, "", "deny"}},
		{"root wireserver curl", agenttest.Root, true, wsGoalState, outcome{200, 1, root, "allow"}},
	} {
		c.run(t, env)
	}

	env.Host.SetModes(map[msp.Endpoint]msp.Mode{msp.EndpointIMDS: msp.ModeEnforce, msp.EndpointWireServer: msp.ModeEnforce})
	env.WaitStatus(t, 10*time.Second, "Enforce", func(s *status.AggregateStatus) bool {
		return s.ProxyAgentStatus.KeyLatchStatus.States["secureChannelState"] == "WireServer Enforce -  IMDS Enforce - HostGA Enforce"
	})
	for _, c := range []call{
		{"enforce: nobody token", agenttest.Nobody, false, imdsToken, outcome{403, 0, "", "deny"}},
		{"enforce: nobody token curl", agenttest.Nobody, true, imdsToken, outcome{403, 0, "", "deny"}},
		{"enforce: root token", agenttest.Root, false, imdsToken, outcome{403, 0, "", "deny"}},
		{"enforce: nobody instance", agenttest.Nobody, false, imdsInstance, outcome{200, 1, nonRoot, "allow"}},
		{"enforce: root instance curl", agenttest.Root, true, imdsInstance, outcome{200, 1, root, "allow"}},
		{"enforce: nobody wireserver", agenttest.Nobody, true, wsGoalState, outcome{403, 0, "", "deny"}},
		{"enforce: root wireserver", agenttest.Root, false, wsGoalState, outcome{200, 1, root, "allow"}},
		{"enforce: root hostga", agenttest.Root, false, "http://168.63.129.16:32526/health", outcome{200, 1, root, "allow"}},
	} {
		c.run(t, env)
	}
}

// A key reset at the host is picked up without failed requests: the first
// request the host refuses under the old key (401) makes the proxy wake
// the latch, which acquires and attests the new key; the proxy signs the
// request again and retries once. Every request of a caller looping across
// the reset gets 200.
func TestKeyResetPickedUp(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	env.StartProvisioned(t)
	old, _ := env.Host.LatchedKey()
	m := mark(t, env)

	done := make(chan []agenttest.Result)
	go func() { done <- env.Loop(t, agenttest.Root, imdsInstance, metadataHeader, 60, 80*time.Millisecond) }()
	time.Sleep(1500 * time.Millisecond)
	resetAt := time.Now()
	env.Host.ResetKey()
	var newGUID string
	env.WaitStatus(t, 10*time.Second, "a new key", func(s *status.AggregateStatus) bool {
		newGUID = s.ProxyAgentStatus.KeyLatchStatus.States["keyGuid"]
		return newGUID != "" && newGUID != old.GUID
	})
	pickedAt := time.Now()
	res := <-done

	var before, window, after, windowFailed int
	for _, r := range res {
		switch {
		case r.Start.Before(resetAt):
			before++
			if r.Status != 200 {
				t.Errorf("before the reset: %v", r)
			}
		case r.Start.After(pickedAt):
			after++
			if r.Status != 200 {
				t.Errorf("after the new key was latched: %v", r)
			}
		default:
			window++
			if r.Status != 200 {
				windowFailed++
				t.Errorf("during the reset: %v", r)
			}
		}
	}
	if windowFailed > 0 {
		for _, r := range env.ConnectionLog(t) {
			if r.StatusCode != 200 || r.Retried {
				t.Logf("audit: %s %s status=%s retried=%v epoch=%d err=%s", r.Time.Format("15:04:05.000"), r.URL, r.ResponseStatus, r.Retried, r.Epoch, r.ErrorDetails)
			}
		}
	}
	if windowFailed > 0 {
		if b, err := os.ReadFile(env.AgentLogPath()); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "refused") || strings.Contains(l, "key") {
					t.Log("agent log: " + l)
				}
			}
		}
	}
	t.Logf("reset picked up after %v: %d requests before, %d in the window (%d failed), %d after",
		pickedAt.Sub(resetAt).Round(time.Millisecond), before, window, windowFailed, after)
	if before == 0 || after == 0 {
		t.Fatalf("the loop did not span the reset: %d before, %d after", before, after)
	}
	// A 1 s poll, plus the status writer's spacing, plus a loaded CI box.
	if w := pickedAt.Sub(resetAt); w > 5*time.Second {
		t.Errorf("the agent took %v to latch the new key with a 1 s poll", w)
	}
	for _, r := range forwarded(env, m) {
		if !r.Signed {
			t.Errorf("the host got an unsigned %s %s", r.Method, r.RawURI)
		}
		if r.Time.After(pickedAt) && (!r.SignatureValid || r.KeyGUID != newGUID) {
			t.Errorf("after the reset: valid %v key %q, want %q", r.SignatureValid, r.KeyGUID, newGUID)
		}
	}
}

// SIGKILL with pinning: the redirect stays attached while the agent is
// dead, so callers are refused instead of reaching the host unsigned;
// the restarted agent takes the pins over and serves again.
func TestSIGKILLRestartWithPins(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce), Pin: true})
	a := env.StartProvisioned(t)
	env.WaitStatus(t, 5*time.Second, "SUCCESS", agenttest.Succeeded)
	progsBefore := testenv.AttachedPrograms(t, env.Cgroup)
	m := mark(t, env)

	done := make(chan []agenttest.Result)
	go func() { done <- env.Loop(t, agenttest.Nobody, imdsInstance, metadataHeader, 120, 50*time.Millisecond) }()
	time.Sleep(500 * time.Millisecond)
	a.Kill(t)
	killedAt := time.Now()
	if code, out := env.StatusCLI(t, 0); code != 1 {
		t.Errorf("--status with the agent dead: exit %d %q, want 1", code, out)
	}
	if progs := testenv.AttachedPrograms(t, env.Cgroup); len(progs) == 0 {
		t.Error("no programs attached to the cgroup while the pinned agent is dead")
	}
	time.Sleep(700 * time.Millisecond)
	a2 := env.StartAgent(t)
	if code, out := env.StatusCLI(t, 10); code != 0 {
		t.Fatalf("--status after the restart: exit %d %q\n%s", code, out, a2.Output())
	}
	restartedAt := time.Now()
	// G4: the restart swapped its programs into the pinned links instead
	// of stacking a second set on the cgroup.
	if progsAfter := testenv.AttachedPrograms(t, env.Cgroup); len(progsAfter) != len(progsBefore) {
		t.Errorf("programs on the cgroup before the kill: %v; after the restart: %v", progsBefore, progsAfter)
	}
	res := <-done

	var down, downFailed, after int
	for _, r := range res {
		switch {
		case r.Start.After(killedAt) && r.Start.Before(a2.Started):
			down++
			if r.Status != 0 {
				downFailed++ // a response while no agent runs came from somewhere else
			}
		case r.Start.After(restartedAt):
			after++
			if r.Status != 200 {
				t.Errorf("after the restart: %v", r)
			}
		}
	}
	t.Logf("%d requests while the agent was dead (%d got a response), %d after the restart", down, downFailed, after)
	if down == 0 || after == 0 {
		t.Fatalf("the loop did not span the restart: %d while dead, %d after", down, after)
	}
	if downFailed > 0 {
		t.Errorf("%d requests got an answer while the agent was dead", downFailed)
	}
	checkSigned(t, "across the restart", forwarded(env, m))
	s := env.WaitStatus(t, 5*time.Second, "SUCCESS after the restart", func(s *status.AggregateStatus) bool {
		return agenttest.Succeeded(s) && s.Timestamp.Time.After(a2.Started)
	})
	if key, _ := env.Host.LatchedKey(); s.ProxyAgentStatus.KeyLatchStatus.States["keyGuid"] != key.GUID {
		t.Errorf("after the restart keyGuid %q, host latched %q", s.ProxyAgentStatus.KeyLatchStatus.States["keyGuid"], key.GUID)
	}
	if !strings.Contains(s.ProxyAgentStatus.KeyLatchStatus.Message, "Found key details from local") {
		t.Errorf("the restarted agent did not reuse its stored key: %q", s.ProxyAgentStatus.KeyLatchStatus.Message)
	}
}

// The host down at first boot and later: --status says not finished while
// no key can be latched, status.json says why, and both recover when the
// host comes back; a request while IMDS is down gets a 5xx from the agent,
// which stays up.
func TestHostDownThenBack(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	env.Host.SetFault(msptest.Fault{Kind: msptest.FaultDown, Endpoint: msp.EndpointWireServer})
	a := env.StartAgent(t)
	if code, out := env.StatusCLI(t, 3); code != 1 {
		t.Errorf("--status --wait 3 with the host down: exit %d %q, want 1", code, out)
	}
	s := env.WaitStatus(t, 5*time.Second, "the key latch failure", func(s *status.AggregateStatus) bool {
		return strings.HasPrefix(s.ProxyAgentStatus.KeyLatchStatus.Message, "Failed to get key status")
	})
	if g := s.ProxyAgentStatus.KeyLatchStatus.States["keyGuid"]; g != "" {
		t.Errorf("keyGuid %q with the host down", g)
	}
	env.Host.ClearFaults()
	if code, out := env.StatusCLI(t, 10); code != 0 {
		t.Fatalf("--status --wait 10 after the host came back: exit %d %q\n%s", code, out, a.Output())
	}
	env.WaitStatus(t, 5*time.Second, "SUCCESS", agenttest.Succeeded)

	env.Host.SetFault(msptest.Fault{Kind: msptest.FaultDown, Endpoint: msp.EndpointIMDS})
	if r := env.Get(t, agenttest.Root, imdsInstance, metadataHeader); r.Status < 500 || r.Status > 599 {
		t.Errorf("IMDS down: %v, want a 5xx from the agent", r)
	}
	env.Host.SetFault(msptest.Fault{Kind: msptest.FaultDown, Endpoint: msp.EndpointWireServer})
	time.Sleep(1500 * time.Millisecond) // at least one failed poll
	if code, out := env.StatusCLI(t, 2); code != 0 {
		t.Errorf("--status with a latched key and the host down: exit %d %q, want 0", code, out)
	}
	env.Host.ClearFaults()
	if r := env.Get(t, agenttest.Root, imdsInstance, metadataHeader); r.Status != 200 {
		t.Errorf("IMDS back: %v", r)
	}
	if !a.Alive() {
		t.Fatalf("the agent died:\n%s", a.Output())
	}
	a.Stop(t)
	s = env.WaitStatus(t, 2*time.Second, "the stopped listener", func(s *status.AggregateStatus) bool {
		return s.ProxyAgentStatus.Status == status.OverallError
	})
	if !strings.Contains(s.ProxyAgentStatus.ProxyListenerStatus.Message, "stopped") {
		t.Errorf("status.json after SIGTERM: listener %q", s.ProxyAgentStatus.ProxyListenerStatus.Message)
	}
}

// TestLooseKeyFolderStarts: an image that left the key folder 0755 gets
// an agent that narrows it to 0700, says so in its log, and provisions,
// as upstream does, instead of one that exits into a restart loop.
func TestLooseKeyFolderStarts(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	if err := os.MkdirAll(env.KeyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(env.KeyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := env.StartAgent(t)
	if code, out := env.StatusCLI(t, 10); code != 0 {
		t.Fatalf("--status --wait 10: exit %d %q\n%s", code, out, a.Output())
	}
	fi, err := os.Stat(env.KeyDir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("key folder after start: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(env.AgentLogPath()); !strings.Contains(string(b), "narrowed to 0700") {
		t.Errorf("the agent log does not say the folder was narrowed:\n%.2000s", b)
	}
}
