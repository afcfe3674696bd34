package status

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/metadatasec/gpa/msp"
)

func TestRegistryOverall(t *testing.T) {
	R, U, S := msp.ModuleRunning, msp.ModuleUnknown, msp.ModuleStopped
	tests := []struct {
		key, ebpf, listener, telemetry msp.ModuleState
		want                           OverallState
	}{
		{R, R, R, U, OverallSuccess},
		{R, R, R, S, OverallSuccess}, // telemetry does not count
		{U, R, R, R, OverallError},
		{R, U, R, R, OverallError},
		{R, R, S, R, OverallError},
		{U, U, U, U, OverallError},
	}
	for _, tt := range tests {
		r := NewRegistry(&RegistryOptions{})
		r.SetState(ModuleKeyLatch, tt.key)
		r.SetState(ModuleRedirector, tt.ebpf)
		r.SetState(ModuleListener, tt.listener)
		r.SetState(ModuleTelemetry, tt.telemetry)
		if got := r.Snapshot(time.Now()).ProxyAgentStatus.Status; got != tt.want {
			t.Errorf("%v/%v/%v/%v: overall %s, want %s", tt.key, tt.ebpf, tt.listener, tt.telemetry, got, tt.want)
		}
	}
}

func TestRegistryChangedSignals(t *testing.T) {
	r := NewRegistry(&RegistryOptions{})
	pending := func() bool {
		select {
		case <-r.Changed():
			return true
		default:
			return false
		}
	}
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"state change", func() { r.SetState(ModuleRedirector, msp.ModuleRunning) }, true},
		{"same state again", func() { r.SetState(ModuleRedirector, msp.ModuleRunning) }, false},
		{"message change", func() { r.SetMessage(ModuleRedirector, "x") }, true},
		{"same message", func() { r.SetMessage(ModuleRedirector, "x") }, false},
		{"monitor message", func() { r.SetMessage(ModuleMonitor, "written") }, false},
		{"key states", func() { r.SetKeyLatchStates(KeyLatchStates{SecureChannelState: "disabled"}) }, true},
		{"same key states", func() { r.SetKeyLatchStates(KeyLatchStates{SecureChannelState: "disabled"}) }, false},
		{"two changes coalesce", func() { r.SetState(ModuleListener, msp.ModuleRunning); r.SetState(ModuleListener, msp.ModuleStopped) }, true},
		{"nothing after coalesced read", func() {}, false},
		{"unknown module ignored", func() { r.Set(Module(200), msp.ModuleRunning, "x") }, false},
	}
	for _, s := range steps {
		s.do()
		if got := pending(); got != s.want {
			t.Errorf("%s: signal = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestRegistrySnapshotIsACopy(t *testing.T) {
	r := NewRegistry(&RegistryOptions{})
	r.SetKeyLatchStates(KeyLatchStates{SecureChannelState: "disabled"})
	s := r.Snapshot(time.Now())
	s.ProxyAgentStatus.KeyLatchStatus.States["secureChannelState"] = "tampered"
	m := r.Module(ModuleKeyLatch)
	m.States["keyGuid"] = "tampered"
	want := KeyLatchStates{SecureChannelState: "disabled"}.Map()
	if diff := cmp.Diff(want, r.Module(ModuleKeyLatch).States); diff != "" {
		t.Errorf("registry state changed through a copy (-want +got):\n%s", diff)
	}
}

func TestRegistryStartingState(t *testing.T) {
	r := NewRegistry(&RegistryOptions{Version: "v"})
	a := r.Snapshot(time.Now()).ProxyAgentStatus
	unknown := ModuleStatus{Status: msp.ModuleUnknown, Message: MessageUnknown}
	want := AgentStatus{
		Version: "v", Status: OverallError,
		MonitorStatus:         ModuleStatus{Status: msp.ModuleRunning, Message: MessageMonitorStarted},
		KeyLatchStatus:        ModuleStatus{Status: msp.ModuleUnknown, Message: MessageUnknown, States: KeyLatchStates{}.Map()},
		EBPFProgramStatus:     unknown,
		ProxyListenerStatus:   unknown,
		TelemetryLoggerStatus: unknown,
	}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
