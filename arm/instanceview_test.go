package arm_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

func instanceViewWith(t *testing.T, message string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"extensions": []any{
		map[string]any{"name": "Other", "type": "Microsoft.Azure.Monitor.Agent", "substatuses": []any{
			map[string]any{"code": "ComponentStatus/ProxyAgentStatus/succeeded", "message": "not ours"}}},
		map[string]any{"name": "ProxyAgentLinux", "type": "Microsoft.CPlat.ProxyAgent.ProxyAgentLinux", "substatuses": []any{
			map[string]any{"code": "ComponentStatus/ProxyAgentStatus/succeeded", "message": message}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseGuestState(t *testing.T) {
	const inner = `{"version":"1.0.9","status":"SUCCESS",
		"keyLatchStatus":{"status":"RUNNING","message":"ready","states":{"secureChannelState":"WireServer Enforce -  IMDS Audit - HostGA Enforce","keyIncarnationId":"12","keyGuid":"g","wireServerRuleId":"ws","imdsRuleId":"im"}},
		"ebpfProgramStatus":{"status":"RUNNING","message":"m"},"proxyListenerStatus":{"status":"RUNNING","message":"m"}}`
	want := arm.GuestState{
		Extension: "ProxyAgentLinux", Status: "SUCCESS", KeyLatchStatus: "RUNNING", KeyLatchMessage: "ready",
		KeyIncarnationID: ptr[int32](12), SecureChannelState: "WireServer Enforce -  IMDS Audit - HostGA Enforce",
		WireServerRuleID: "ws", IMDSRuleID: "im", EBPFProgramStatus: "RUNNING", ProxyListenerStatus: "RUNNING",
	}
	tests := []struct {
		name    string
		view    []byte
		want    arm.GuestState
		wantErr bool
	}{
		{"proxyAgentStatus object", instanceViewWith(t, inner), want, false},
		{"whole status.json", instanceViewWith(t, `{"timestamp":"x","proxyAgentStatus":`+inner+`}`), want, false},
		{"numeric incarnation", instanceViewWith(t, `{"status":"SUCCESS","keyLatchStatus":{"status":"RUNNING","states":{"keyIncarnationId":3}}}`),
			arm.GuestState{Extension: "ProxyAgentLinux", Status: "SUCCESS", KeyLatchStatus: "RUNNING", KeyIncarnationID: ptr[int32](3)}, false},
		{"no key latched", instanceViewWith(t, `{"status":"ERROR","keyLatchStatus":{"status":"RUNNING","states":{"secureChannelState":"Unknown"}}}`),
			arm.GuestState{Extension: "ProxyAgentLinux", Status: "ERROR", KeyLatchStatus: "RUNNING", SecureChannelState: "Unknown"}, false},
		{"bad incarnation", instanceViewWith(t, `{"keyLatchStatus":{"status":"RUNNING","states":{"keyIncarnationId":"x1"}}}`), arm.GuestState{}, true},
		{"message not JSON", instanceViewWith(t, `Status unknown.`), arm.GuestState{}, true},
		{"no extension", []byte(`{"statuses":[]}`), arm.GuestState{}, true},
		{"not JSON", []byte(`<html>`), arm.GuestState{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := arm.ParseGuestState(tt.view)
			if tt.wantErr {
				if !errors.Is(err, arm.ErrGuestStateUnavailable) {
					t.Fatalf("err = %v, want ErrGuestStateUnavailable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestResetAndWaitForGuest(t *testing.T) {
	srv := newServer(t, &armtest.Options{GuestAutoLatch: true})
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux",
		ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":1,"wireServer":{"mode":"Enforce"},"imds":{"mode":"Audit"}}`})
	c := newClient(t, srv, nil)
	read := func(ctx context.Context) (arm.GuestState, error) {
		r, err := c.GetVirtualMachineGuestState(ctx, rg, "vm1", nil)
		return r.GuestState, err
	}
	// Before any update the guest has not reported.
	if _, err := read(ctx(t)); !errors.Is(err, arm.ErrGuestStateUnavailable) {
		t.Fatalf("read before report = %v", err)
	}
	r, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Poller.PollUntilDone(ctx(t), fast); err != nil {
		t.Fatal(err)
	}
	st, err := arm.WaitForGuestKeyIncarnation(ctx(t), r.KeyIncarnationID, read, &arm.WaitOptions{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if *st.KeyIncarnationID != 2 || st.SecureChannelState != "WireServer Enforce -  IMDS Audit - HostGA Enforce" {
		t.Errorf("state = %+v", st)
	}

	t.Run("times out while the guest lags", func(t *testing.T) {
		c2, cancel := context.WithTimeout(ctx(t), 30*time.Millisecond)
		defer cancel()
		st, err := arm.WaitForGuestKeyIncarnation(c2, 3, read, &arm.WaitOptions{Interval: time.Millisecond})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		if st.KeyIncarnationID == nil || *st.KeyIncarnationID != 2 {
			t.Errorf("last state = %+v", st)
		}
	})
	t.Run("scale-set instance", func(t *testing.T) {
		srv.AddScaleSet(vmssID("ss"), armtest.ScaleSet{Location: region, OSType: "Windows", UpgradeMode: "Manual"})
		srv.AddScaleSetInstance(vmssID("ss"), "0", armtest.VM{Location: region, OSType: "Windows", ProxyAgentSettings: `{"enabled":true}`})
		srv.LatchGuest(vmssID("ss") + "/virtualMachines/0")
		got, err := c.GetScaleSetInstanceGuestState(ctx(t), rg, "ss", "0", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Extension != "ProxyAgentWindows" || got.KeyIncarnationID == nil || *got.KeyIncarnationID != 0 {
			t.Errorf("state = %+v", got.GuestState)
		}
	})
}
