package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metadatasec/gpa/internal/agenttest"
	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
	"github.com/metadatasec/gpa/status"
)

// waitListening waits until a's status.json says its listener runs.
func waitListening(t *testing.T, env *agenttest.Env, a *agenttest.Agent) *status.AggregateStatus {
	t.Helper()
	return env.WaitStatus(t, 10*time.Second, "the restarted listener", func(s *status.AggregateStatus) bool {
		return s.Timestamp.Time.After(a.Started) && s.ProxyAgentStatus.ProxyListenerStatus.Status == msp.ModuleRunning
	})
}

// statusPollsSince returns the key-status polls the host recorded since m.
func statusPollsSince(env *agenttest.Env, m seen) []msptest.Request {
	var out []msptest.Request
	for _, r := range env.Host.RequestsTo("GET", keylatch.StatusPath) {
		if !r.Time.Before(m.at) {
			out = append(out, r)
		}
	}
	return out
}

// keyFiles lists the <guid>.key files in dir by guid.
func keyFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if g, ok := strings.CutSuffix(e.Name(), ".key"); ok {
			out = append(out, g)
		}
	}
	return out
}

// A restart while the key-status endpoint fails: the agent signs with the
// key latched before the restart and knows the endpoints are in Enforce,
// so nothing goes out unsigned and nothing waits for the start-up wait.
// Without its key file it answers 503 with Retry-After; with no stored
// state at all it behaves as upstream on first boot (held, then unsigned).
func TestRestartWhileKeyStatusFails(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce), Pin: true})
	a := env.StartProvisioned(t)
	key, ok := env.Host.LatchedKey()
	if !ok {
		t.Fatal("no key latched")
	}
	a.Stop(t)
	if _, err := os.Stat(filepath.Join(env.KeyDir, keylatch.StateFileName)); err != nil {
		t.Fatalf("the agent left no latch state: %v", err)
	}
	onStatus := func(f msptest.Fault) msptest.Fault {
		f.Endpoint, f.Path = msp.EndpointWireServer, keylatch.StatusPath
		return f
	}

	for _, tt := range []struct {
		name  string
		fault msptest.Fault
	}{
		{"500", onStatus(msptest.Fault{Kind: msptest.FaultStatus, Status: 500})},
		{"garbage", onStatus(msptest.Fault{Kind: msptest.FaultMalformedJSON})},
		{"hang", onStatus(msptest.Fault{Kind: msptest.FaultSlow, Delay: time.Minute})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env.Host.SetFault(tt.fault)
			defer env.Host.ClearFaults()
			m := mark(t, env)
			a := env.StartAgent(t)
			defer a.Stop(t)
			waitListening(t, env, a)
			for _, c := range []struct {
				uid uint32
				url string
			}{{agenttest.Nobody, imdsInstance}, {agenttest.Root, wsGoalState}} {
				if r := env.Get(t, c.uid, c.url, metadataHeader); r.Status != 200 {
					t.Errorf("uid %d %s: %v %s", c.uid, c.url, r, r.Body)
				}
			}
			fw := forwarded(env, m)
			if len(fw) != 2 {
				t.Errorf("the host got %d requests, want 2", len(fw))
			}
			checkSigned(t, "restart with "+tt.name+" key status", fw)
			for _, r := range fw {
				if r.KeyGUID != key.GUID {
					t.Errorf("%s signed with %q, want the stored key %s", r.RawURI, r.KeyGUID, key.GUID)
				}
			}
			// The requests did not ride on a status the host sent.
			for _, r := range statusPollsSince(env, m) {
				if r.Fault != tt.fault.Kind {
					t.Errorf("a key-status poll was answered without the fault: %+v", r.Status)
				}
			}
			s := env.WaitStatus(t, 5*time.Second, "the restored key latch state", func(s *status.AggregateStatus) bool {
				return s.ProxyAgentStatus.KeyLatchStatus.States["keyGuid"] == key.GUID
			})
			kl := s.ProxyAgentStatus.KeyLatchStatus
			if kl.States["secureChannelState"] != "WireServer Enforce -  IMDS Enforce - HostGA Enforce" ||
				strings.HasPrefix(kl.Message, msp.KeyLatchMsgFoundLocal) {
				t.Errorf("keyLatchStatus while the host does not answer: %q %v", kl.Message, kl.States)
			}
		})
	}

	t.Run("key file lost", func(t *testing.T) {
		if err := os.Remove(filepath.Join(env.KeyDir, key.GUID+".key")); err != nil {
			t.Fatal(err)
		}
		env.Host.SetFault(onStatus(msptest.Fault{Kind: msptest.FaultStatus, Status: 500}))
		m := mark(t, env)
		a := env.StartAgent(t)
		defer a.Stop(t)
		waitListening(t, env, a)
		r := env.Get(t, agenttest.Nobody, imdsInstance, metadataHeader)
		if r.Status != 503 || r.Header.Get("Retry-After") == "" {
			t.Errorf("Enforce endpoint without a key: %v Retry-After %q, want 503 with Retry-After", r, r.Header.Get("Retry-After"))
		}
		if fw := forwarded(env, m); len(fw) != 0 {
			t.Errorf("the host got %d requests without a key to sign them", len(fw))
		}
		env.Host.ClearFaults()
		if code, out := env.StatusCLI(t, 20); code != 0 {
			t.Fatalf("--status after the host answered: exit %d %q\n%s", code, out, a.Output())
		}
		m = mark(t, env)
		if r := env.Get(t, agenttest.Nobody, imdsInstance, metadataHeader); r.Status != 200 {
			t.Errorf("after a new key: %v", r)
		}
		checkSigned(t, "after a new key", forwarded(env, m))
	})

	t.Run("no stored state", func(t *testing.T) {
		paths := []string{filepath.Join(env.KeyDir, keylatch.StateFileName)}
		for _, g := range keyFiles(t, env.KeyDir) {
			paths = append(paths, filepath.Join(env.KeyDir, g+".key"))
		}
		for _, p := range paths {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		env.Host.SetFault(onStatus(msptest.Fault{Kind: msptest.FaultStatus, Status: 500}))
		defer env.Host.ClearFaults()
		m := mark(t, env)
		a := env.StartAgent(t)
		defer a.Stop(t)
		waitListening(t, env, a)
		// Upstream's first boot: nothing known, so the request is held for
		// the start-up wait and then sent unsigned; the host refuses it.
		r := env.Get(t, agenttest.Nobody, imdsInstance, metadataHeader)
		fw := forwarded(env, m)
		if r.Status != 401 || len(fw) != 1 || fw[0].Signed {
			t.Errorf("first boot with the host silent: %v, host got %d (signed %v)", r, len(fw), len(fw) == 1 && fw[0].Signed)
		}
	})
}

// When key-status polls recover after failing, status.json says so
// instead of keeping "Failed to get key status" until the next key event.
func TestKeyStatusRecoveryReported(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	env.StartProvisioned(t)
	env.Host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Status: 500, Endpoint: msp.EndpointWireServer, Path: keylatch.StatusPath})
	env.WaitStatus(t, 10*time.Second, "the failing key status", func(s *status.AggregateStatus) bool {
		return strings.HasPrefix(s.ProxyAgentStatus.KeyLatchStatus.Message, msp.KeyLatchMsgStatusFailed)
	})
	env.Host.ClearFaults()
	s := env.WaitStatus(t, 10*time.Second, "the recovered key status", func(s *status.AggregateStatus) bool {
		return !strings.HasPrefix(s.ProxyAgentStatus.KeyLatchStatus.Message, msp.KeyLatchMsgStatusFailed)
	})
	if msg := s.ProxyAgentStatus.KeyLatchStatus.Message; !strings.HasPrefix(msg, msp.KeyLatchMsgStatusRecovered) {
		t.Errorf("keyLatchStatus after recovery: %q, want %q", msg, msp.KeyLatchMsgStatusRecovered)
	}
	if !agenttest.Succeeded(s) {
		t.Errorf("status after recovery: %s", s.ProxyAgentStatus.Status)
	}
}

// Attestations the host refuses do not leave a key file each: the latched
// key stays, and only the newest keylatch.KeepUnattestedKeys others remain.
func TestRefusedAttestationsKeepFewKeyFiles(t *testing.T) {
	env := agenttest.New(t, &agenttest.Options{Rules: rules(msp.ModeEnforce)})
	a := env.StartProvisioned(t)
	first, _ := env.Host.LatchedKey()
	env.Host.ResetKey()
	env.Host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Status: 403, Endpoint: msp.EndpointWireServer, PathPrefix: keylatch.KeyPath + "/"})
	want := keylatch.KeepUnattestedKeys + 4
	for deadline := time.Now().Add(30 * time.Second); len(env.Host.IssuedKeys()) < want; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the host issued %d keys in 30 s, want %d", len(env.Host.IssuedKeys()), want)
		}
	}
	// Stopped, so no save is half done when the folder is read.
	a.Stop(t)
	files := keyFiles(t, env.KeyDir)
	if !slices.Contains(files, first.GUID) {
		t.Errorf("the latched key's file is gone: %v", files)
	}
	if n := len(files) - 1; n > keylatch.KeepUnattestedKeys {
		t.Errorf("%d unattested key files kept, want at most %d: %v", n, keylatch.KeepUnattestedKeys, files)
	}
	issued := env.Host.IssuedKeys()
	for _, k := range issued[1 : len(issued)-keylatch.KeepUnattestedKeys-1] {
		if slices.Contains(files, k.GUID) {
			t.Errorf("old unattested key %s kept while newer ones were removed", k.GUID)
		}
	}

	env.Host.ClearFaults()
	a = env.StartAgent(t)
	if code, out := env.StatusCLI(t, 20); code != 0 {
		t.Fatalf("--status once attestations succeed: exit %d %q\n%s", code, out, a.Output())
	}
	latched, _ := env.Host.LatchedKey()
	if files := keyFiles(t, env.KeyDir); !slices.Contains(files, latched.GUID) || len(files) > keylatch.KeepUnattestedKeys+2 {
		t.Errorf("key files after the new key latched: %v (latched %s)", files, latched.GUID)
	}
}
