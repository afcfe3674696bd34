package status_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/status"
)

func TestClassifyMessage(t *testing.T) {
	tests := []struct {
		m    status.Module
		msg  string
		want status.Cause
	}{
		{status.ModuleRedirector, "Started Redirector with eBPF maps - 143", status.CauseNone},
		{status.ModuleRedirector, "eBPF redirector is starting", status.CauseNone},
		{status.ModuleRedirector, "Failed to start redirector: Failed to load program 'connect4' with error: the BPF_PROG_LOAD syscall failed", status.CauseEBPFLoad},
		{status.ModuleRedirector, "Failed to start redirector: Failed to load HashMap 'policy_map' with error: x", status.CauseEBPFLoad},
		{status.ModuleRedirector, "Failed to start redirector: Failed to convert program to 'CgroupSockAddr' with error: x", status.CauseEBPFLoad},
		{status.ModuleRedirector, "Loading eBPF API from file path '/usr/lib/azure-proxy-agent/ebpf_cgroup.o' failed with error: File does not exist", status.CauseEBPFMissingObject},
		{status.ModuleRedirector, "Failed to start redirector: Failed to attach program 'connect4' with error: EBADF", status.CauseCgroupAttach},
		{status.ModuleRedirector, "FAILED TO OPEN CGROUP '/sys/fs/cgroup' with error: ENOENT", status.CauseCgroupAttach},
		{status.ModuleRedirector, "Failed to start eBPF/redirector with multiple retries", status.CauseOther},
		{status.ModuleKeyLatch, "Successfully attest the key and ready to use. - 1234", status.CauseNone},
		{status.ModuleKeyLatch, "Customer has not enforce the secure channel state. - 2045", status.CauseMSPDisabled},
		{status.ModuleKeyLatch, `Failed to acquire key details: Key(KeyResponse("acquire", 500))`, status.CauseKeyAcquisition},
		{status.ModuleKeyLatch, "Failed to attest the key: Key error: Failed to attest key with status code: 500 Internal Server Error", status.CauseKeyAcquisition},
		{status.ModuleKeyLatch, "Failed to check the key 'g' details saved locally: bad json.", status.CauseKeyAcquisition},
		{status.ModuleKeyLatch, "key rejected by the host: 401", status.CauseKeyAcquisition},
		{status.ModuleKeyLatch, "Failed to get key status - Host connection error: timed out", status.CauseKeyStatusUnreachable},
		{status.ModuleListener, "IO error: Failed to bind TcpListener '127.0.0.1:3080': address in use", status.CauseListenerBind},
		{status.ModuleListener, "Started proxy listener, ready to accept request - 27", status.CauseNone},
		{status.ModuleListener, "listener error: closed", status.CauseOther},
	}
	for _, tt := range tests {
		if got := status.ClassifyMessage(tt.m, tt.msg); got != tt.want {
			t.Errorf("ClassifyMessage(%v, %q) = %v, want %v", tt.m, tt.msg, got, tt.want)
		}
	}
}

// row is a Finding reduced to what an operator reads, for comparison.
type row struct {
	Check, Result string
	Cause         string
	Action        string // a substring the action must contain
}

func rows(fs []status.Finding) []row {
	out := make([]row, len(fs))
	for i, f := range fs {
		out[i] = row{Check: f.Check, Result: f.Severity.String(), Cause: f.Cause.String(), Action: f.Action}
	}
	return out
}

// healthy returns a SUCCESS status written at ts.
func healthy(ts time.Time) *status.AggregateStatus {
	s := &status.AggregateStatus{Timestamp: status.Timestamp{Time: ts}}
	a := &s.ProxyAgentStatus
	a.Version = "1.0.38"
	a.KeyLatchStatus = status.ModuleStatus{Status: msp.ModuleRunning, Message: "Successfully attest the key and ready to use. - 1234",
		States: map[string]string{"secureChannelState": "WireServer Enforce -  IMDS Enforce - HostGA Enforce"}}
	a.EBPFProgramStatus = status.ModuleStatus{Status: msp.ModuleRunning, Message: "Started Redirector with eBPF maps - 143"}
	a.ProxyListenerStatus = status.ModuleStatus{Status: msp.ModuleRunning, Message: "Started proxy listener, ready to accept request - 27"}
	a.MonitorStatus = status.ModuleStatus{Status: msp.ModuleRunning, Message: "Aggregate status written to status file: /var/log/azure-proxy-agent/status.json"}
	a.Status = a.Overall()
	return s
}

func TestDiagnose(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	fresh := now.Add(-30 * time.Second)
	ok := func(check string) row { return row{Check: check, Result: "OK", Cause: "none"} }
	tests := []struct {
		name    string
		windows bool
		edit    func(s *status.AggregateStatus)
		want    []row
		// wantAction maps a check to a substring its action must contain.
		wantAction map[string]string
	}{{
		name: "healthy",
		edit: func(*status.AggregateStatus) {},
		want: []row{ok("status.timestamp"), ok("status.proxyAgentStatus"), ok("status.keyLatchStatus"), ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
	}, {
		name:       "stale",
		edit:       func(s *status.AggregateStatus) { s.Timestamp.Time = now.Add(-5*time.Minute - time.Second) },
		want:       []row{{Check: "status.timestamp", Result: "FAIL", Cause: "none"}, ok("status.proxyAgentStatus"), ok("status.keyLatchStatus"), ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.timestamp": "systemctl status azure-proxy-agent"},
	}, {
		name:       "stale on windows",
		windows:    true,
		edit:       func(s *status.AggregateStatus) { s.Timestamp.Time = now.Add(-time.Hour) },
		want:       []row{{Check: "status.timestamp", Result: "FAIL", Cause: "none"}, ok("status.proxyAgentStatus"), ok("status.keyLatchStatus"), ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.timestamp": "sc query GuestProxyAgent"},
	}, {
		name: "exactly five minutes is still fresh",
		edit: func(s *status.AggregateStatus) { s.Timestamp.Time = now.Add(-5 * time.Minute) },
		want: []row{ok("status.timestamp"), ok("status.proxyAgentStatus"), ok("status.keyLatchStatus"), ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
	}, {
		name:       "future timestamp",
		edit:       func(s *status.AggregateStatus) { s.Timestamp.Time = now.Add(10 * time.Minute) },
		want:       []row{{Check: "status.timestamp", Result: "WARN", Cause: "none"}, ok("status.proxyAgentStatus"), ok("status.keyLatchStatus"), ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.timestamp": "clock"},
	}, {
		name: "ebpf load failure points at the kernel",
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.EBPFProgramStatus = status.ModuleStatus{Status: msp.ModuleUnknown, Message: "Failed to start redirector: Failed to load program 'connect4' with error: EINVAL"}
			s.ProxyAgentStatus.Status = s.ProxyAgentStatus.Overall()
		},
		want:       []row{ok("status.timestamp"), {Check: "status.proxyAgentStatus", Result: "FAIL", Cause: "none"}, ok("status.keyLatchStatus"), {Check: "status.ebpfProgramStatus", Result: "FAIL", Cause: "ebpf-load"}, ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.ebpfProgramStatus": "5.15"},
	}, {
		name: "attach failure points at cgroup v2",
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.EBPFProgramStatus = status.ModuleStatus{Status: msp.ModuleUnknown, Message: "Failed to start redirector: Failed to attach program 'connect4' with error: EBADF"}
			s.ProxyAgentStatus.Status = s.ProxyAgentStatus.Overall()
		},
		want:       []row{ok("status.timestamp"), {Check: "status.proxyAgentStatus", Result: "FAIL", Cause: "none"}, ok("status.keyLatchStatus"), {Check: "status.ebpfProgramStatus", Result: "FAIL", Cause: "cgroup-attach"}, ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.ebpfProgramStatus": "systemd.unified_cgroup_hierarchy=1"},
	}, {
		name:    "ebpf failure on windows points at the eBPF services",
		windows: true,
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.EBPFProgramStatus = status.ModuleStatus{Status: msp.ModuleUnknown, Message: "Failed to start redirector: Failed to load program 'connect4' with error: x"}
			s.ProxyAgentStatus.Status = s.ProxyAgentStatus.Overall()
		},
		want:       []row{ok("status.timestamp"), {Check: "status.proxyAgentStatus", Result: "FAIL", Cause: "none"}, ok("status.keyLatchStatus"), {Check: "status.ebpfProgramStatus", Result: "FAIL", Cause: "ebpf-load"}, ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.ebpfProgramStatus": "eBPFCore"},
	}, {
		// The key latch stays RUNNING while failing: SUCCESS overall, yet
		// the guide's key acquisition failure.
		name: "key acquisition failure while RUNNING",
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.KeyLatchStatus.Message = `Failed to acquire key details: Key(KeyResponse("acquire", 500))`
		},
		want:       []row{ok("status.timestamp"), ok("status.proxyAgentStatus"), {Check: "status.keyLatchStatus", Result: "FAIL", Cause: "key-acquisition"}, ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.keyLatchStatus": "msp-keyreset"},
	}, {
		name: "msp disabled is a warning",
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.KeyLatchStatus = status.ModuleStatus{Status: msp.ModuleRunning, Message: "Customer has not enforce the secure channel state. - 2045", States: map[string]string{"secureChannelState": "disabled"}}
		},
		want: []row{ok("status.timestamp"), ok("status.proxyAgentStatus"), {Check: "status.keyLatchStatus", Result: "WARN", Cause: "msp-disabled"}, ok("status.ebpfProgramStatus"), ok("status.proxyListenerStatus")},
	}, {
		name: "listener stopped, bind failure; monitor write failure",
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.ProxyListenerStatus = status.ModuleStatus{Status: msp.ModuleStopped, Message: "IO error: Failed to bind TcpListener '127.0.0.1:3080': address in use"}
			s.ProxyAgentStatus.MonitorStatus.Message = "Error writing aggregate status to status file: disk full"
			s.ProxyAgentStatus.Status = s.ProxyAgentStatus.Overall()
		},
		want: []row{ok("status.timestamp"), {Check: "status.proxyAgentStatus", Result: "FAIL", Cause: "none"}, ok("status.keyLatchStatus"), ok("status.ebpfProgramStatus"),
			{Check: "status.proxyListenerStatus", Result: "FAIL", Cause: "listener-bind"}, {Check: "status.monitorStatus", Result: "WARN", Cause: "none"}},
		wantAction: map[string]string{"status.proxyListenerStatus": "127.0.0.1:3080"},
	}, {
		// A module that is not RUNNING fails even with a harmless message.
		name: "module stopped without failure text",
		edit: func(s *status.AggregateStatus) {
			s.ProxyAgentStatus.EBPFProgramStatus.Status = msp.ModuleStopped
			s.ProxyAgentStatus.Status = s.ProxyAgentStatus.Overall()
		},
		want:       []row{ok("status.timestamp"), {Check: "status.proxyAgentStatus", Result: "FAIL", Cause: "none"}, ok("status.keyLatchStatus"), {Check: "status.ebpfProgramStatus", Result: "FAIL", Cause: "none"}, ok("status.proxyListenerStatus")},
		wantAction: map[string]string{"status.ebpfProgramStatus": "systemctl restart"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := healthy(fresh)
			tt.edit(s)
			got := status.Diagnose(s, &status.DiagnoseOptions{Now: now, Windows: tt.windows})
			if diff := cmp.Diff(tt.want, rows(got), cmpopts.IgnoreFields(row{}, "Action")); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			for _, f := range got {
				want, ok := tt.wantAction[f.Check]
				switch {
				case ok && !strings.Contains(f.Action, want):
					t.Errorf("%s action %q does not contain %q", f.Check, f.Action, want)
				case f.Severity == status.SeverityOK && f.Action != "":
					t.Errorf("%s is OK but has action %q", f.Check, f.Action)
				case f.Severity != status.SeverityOK && f.Action == "":
					t.Errorf("%s is %v without an action", f.Check, f.Severity)
				}
			}
		})
	}
}

func TestDiagnoseNil(t *testing.T) {
	got := status.Diagnose(nil, &status.DiagnoseOptions{})
	if len(got) != 1 || got[0].Severity != status.SeverityFail {
		t.Fatalf("Diagnose(nil) = %+v, want one FAIL", got)
	}
}

// A long module message is shortened in the finding, and the finding
// marshals with the severity as a word.
func TestFindingShortAndJSON(t *testing.T) {
	now := time.Now()
	s := healthy(now)
	s.ProxyAgentStatus.ProxyListenerStatus = status.ModuleStatus{Status: msp.ModuleStopped, Message: "listener error: " + strings.Repeat("x", 2000)}
	f := status.Diagnose(s, &status.DiagnoseOptions{Now: now})[4]
	if len(f.Message) > 300 || !strings.HasSuffix(f.Message, `..."`) {
		t.Errorf("message not shortened: %d chars", len(f.Message))
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"result":"FAIL"`) {
		t.Errorf("JSON %s lacks the severity word", b)
	}
}

// An operator's view of a status whose key latch cannot get a key.
func ExampleDiagnose() {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s, err := status.Parse([]byte(`{"timestamp":"2026-11-25T11:59:30.000","proxyAgentStatus":{"version":"1.0.38","status":"SUCCESS",
		"keyLatchStatus":{"status":"RUNNING","message":"Failed to attest the key: Key error: Failed to attest key with status code: 500 Internal Server Error"},
		"ebpfProgramStatus":{"status":"RUNNING","message":"Started Redirector with eBPF maps - 143"},
		"proxyListenerStatus":{"status":"RUNNING","message":"Started proxy listener, ready to accept request - 27"}}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range status.Diagnose(s, &status.DiagnoseOptions{Now: now}) {
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%-4s %s %s", f.Severity, f.Check, f.Action)))
	}
	// Output:
	// OK   status.timestamp
	// OK   status.proxyAgentStatus
	// FAIL status.keyLatchStatus reset the latched key from ARM: msp-keyreset --vm <resource id> (raises keyIncarnationId)
	// OK   status.ebpfProgramStatus
	// OK   status.proxyListenerStatus
}

// FuzzDiagnose checks that any status the reader accepts gets a complete
// diagnosis: the five fixed rows in order, and an action on every row that
// is not OK.
func FuzzDiagnose(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b, false)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, windows bool) {
		s, err := status.Parse(data)
		if err != nil {
			return
		}
		got := status.Diagnose(s, &status.DiagnoseOptions{Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Windows: windows})
		if len(got) < 5 {
			t.Fatalf("%d findings, want at least 5", len(got))
		}
		for i, want := range []string{"status.timestamp", "status.proxyAgentStatus", "status.keyLatchStatus", "status.ebpfProgramStatus", "status.proxyListenerStatus"} {
			if got[i].Check != want {
				t.Fatalf("finding %d is %q, want %q", i, got[i].Check, want)
			}
		}
		for _, f := range got {
			if (f.Severity == status.SeverityOK) != (f.Action == "") {
				t.Fatalf("%s is %v with action %q", f.Check, f.Severity, f.Action)
			}
		}
	})
}
