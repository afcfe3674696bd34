package status

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// goldenTime is a fixed instant with non-zero milliseconds, so the golden
// files pin the 23-character timestamp.
var goldenTime = time.Date(2025, 4, 23, 12, 0, 0, 123_456_789, time.UTC)

var cmpTimestamp = cmp.Comparer(func(a, b Timestamp) bool { return a.Equal(b.Time) })

const (
	testVersion    = "1.0.30"
	threeEnforce   = "WireServer Enforce -  IMDS Enforce - HostGA Enforce"
	testKeyGUID    = "5f8f3d8a-8b2b-4e0a-9c3e-2a1d6f7b9c01"
	ebpfLoadFailed = "Failed to start redirector: Failed to load program 'connect4' with error: the BPF_PROG_LOAD syscall failed. Verifier output: invalid argument"
)

// goldenStates builds the registry of each state an operator may find.
func goldenStates() map[string]*Registry {
	healthy := func(r *Registry) {
		r.Set(ModuleKeyLatch, msp.ModuleRunning, "Successfully attest the key and ready to use. - 1234")
		r.SetKeyLatchStates(KeyLatchStates{
			SecureChannelState: threeEnforce, KeyGUID: testKeyGUID,
			WireServerRuleID: "ws-rules-1", IMDSRuleID: "imds-rules-2", HostGARuleID: "hostga-rules-3",
			KeyIncarnationID: "1",
		})
		r.Set(ModuleRedirector, msp.ModuleRunning, "Started Redirector with eBPF maps - 143")
		r.Set(ModuleListener, msp.ModuleRunning, "Started proxy listener, ready to accept request - 27")
		r.SetMessage(ModuleTelemetry, "Telemetry event logger thread started.")
	}
	out := map[string]*Registry{}

	r := NewRegistry(&RegistryOptions{Version: testVersion})
	r.Set(ModuleKeyLatch, msp.ModuleRunning, "poll secure channel status task started.")
	r.SetMessage(ModuleRedirector, "eBPF redirector is starting")
	out["starting"] = r

	r = NewRegistry(&RegistryOptions{Version: testVersion})
	healthy(r)
	r.Set(ModuleRedirector, msp.ModuleUnknown, ebpfLoadFailed)
	r.SetMessage(ModuleMonitor, "Aggregate status written to status file: "+LinuxStatusPath)
	out["ebpf-failed"] = r

	r = NewRegistry(&RegistryOptions{Version: testVersion})
	healthy(r)
	r.SetMessage(ModuleKeyLatch, `Failed to acquire key details: Key(KeyResponse("acquire", 500))`)
	r.SetKeyLatchStates(KeyLatchStates{SecureChannelState: threeEnforce, WireServerRuleID: "ws-rules-1"})
	out["key-failing"] = r

	r = NewRegistry(&RegistryOptions{Version: testVersion})
	healthy(r)
	r.SetMessage(ModuleMonitor, "Aggregate status written to status file: "+LinuxStatusPath)
	for i := range 590 {
		r.CountRequest()
		c := Connection{
			UserName: "root", UserGroups: []string{"root"}, ClientIP: "127.0.0.1",
			IP: "169.254.169.254", Port: 80, ProcessFullPath: "/usr/bin/curl",
			ProcessCmdLine: "curl -H Metadata:true http://169.254.169.254/metadata/instance", ResponseStatus: "200 OK",
		}
		if i%10 == 0 {
			c.UserName, c.UserGroups, c.ResponseStatus = "azureuser", []string{"azureuser", "adm"}, "403 Forbidden"
			c.IP, c.ProcessFullPath, c.ProcessCmdLine = "168.63.129.16", "/usr/bin/python3", "python3 probe.py"
			r.FailedAuthentications().Record(goldenTime.Add(-time.Duration(i)*time.Second), c)
		}
		r.Connections().Record(goldenTime.Add(-time.Duration(i)*time.Second), c)
	}
	out["healthy"] = r

	r = NewRegistry(&RegistryOptions{Version: testVersion})
	healthy(r)
	r.SetMessage(ModuleKeyLatch, "Customer has not enforce the secure channel state. - 2045")
	r.SetKeyLatchStates(KeyLatchStates{SecureChannelState: msp.SecureChannelDisabled})
	out["disabled"] = r
	return out
}

func TestGoldenStatusFiles(t *testing.T) {
	wantOverall := map[string]OverallState{
		"starting": OverallError, "ebpf-failed": OverallError,
		"key-failing": OverallSuccess, "healthy": OverallSuccess, "disabled": OverallSuccess,
	}
	for name, reg := range goldenStates() {
		t.Run(name, func(t *testing.T) {
			snap := reg.Snapshot(goldenTime)
			got, err := snap.MarshalIndent()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "status-"+name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("missing golden file (run with -update once): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("status.json differs from %s (-want +got):\n%s", path, diff)
			}
			back, err := Parse(want)
			if err != nil {
				t.Fatalf("Parse(%s): %v", path, err)
			}
			if diff := cmp.Diff(snap, back, cmpTimestamp); diff != "" {
				t.Errorf("parse of %s lost information (-wrote +read):\n%s", path, diff)
			}
			if got := back.ProxyAgentStatus.Status; got != wantOverall[name] {
				t.Errorf("overall status = %s, want %s", got, wantOverall[name])
			}
			if len(back.Timestamp.AppendFormat(nil, TimestampLayout)) != 23 {
				t.Errorf("timestamp is not 23 characters")
			}
		})
	}
}
