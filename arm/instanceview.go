package arm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrGuestStateUnavailable: the instance view carries no ProxyAgent status
// (extension missing, not reported yet, or unreadable).
var ErrGuestStateUnavailable = errors.New("guest proxy agent status not available in the instance view")

// GuestState is the MSP state the guest agent reported through the
// ProxyAgent extension's substatus. It holds no key material.
type GuestState struct {
	// Extension is the reporting extension's name.
	Extension string
	// Status is the overall status: SUCCESS or ERROR.
	Status string
	// KeyLatchStatus is RUNNING when the key keeper loop runs.
	KeyLatchStatus string
	// KeyLatchMessage is the key keeper's last message.
	KeyLatchMessage string
	// KeyIncarnationID is the incarnation of the latched key; nil when the
	// guest holds no key.
	KeyIncarnationID *int32
	// SecureChannelState is, for example,
	// "WireServer Enforce -  IMDS Enforce - HostGA Enforce" or "disabled".
	SecureChannelState string
	// WireServerRuleID and IMDSRuleID identify the rule sets in force.
	WireServerRuleID, IMDSRuleID string
	// EBPFProgramStatus and ProxyListenerStatus are RUNNING when healthy.
	EBPFProgramStatus, ProxyListenerStatus string
}

// GuestStateResponse is the result of reading the guest state.
type GuestStateResponse struct {
	GuestState
}

// GetVirtualMachineGuestState reads the VM's instance view and returns what
// the guest agent last reported. It fails with ErrGuestStateUnavailable when
// there is no report.
func (c *Client) GetVirtualMachineGuestState(ctx context.Context, resourceGroup, name string, _ *ClientGetVirtualMachineGuestStateOptions) (GuestStateResponse, error) {
	path, err := c.resourcePath(resourceGroup, "virtualMachines", name)
	if err != nil {
		return GuestStateResponse{}, err
	}
	return c.guestState(ctx, "Client.GetVirtualMachineGuestState", path+"/instanceView")
}

// GetScaleSetInstanceGuestState does the same for a scale-set instance.
func (c *Client) GetScaleSetInstanceGuestState(ctx context.Context, resourceGroup, scaleSet, instanceID string, _ *ClientGetScaleSetInstanceGuestStateOptions) (GuestStateResponse, error) {
	path, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", scaleSet, "virtualMachines", instanceID)
	if err != nil {
		return GuestStateResponse{}, err
	}
	return c.guestState(ctx, "Client.GetScaleSetInstanceGuestState", path+"/instanceView")
}

func (c *Client) guestState(ctx context.Context, api, path string) (GuestStateResponse, error) {
	var view json.RawMessage
	if _, err := c.call(ctx, api, http.MethodGet, path, c.computeAPI, nil, nil, &view, http.StatusOK); err != nil {
		return GuestStateResponse{}, err
	}
	st, err := ParseGuestState(view)
	return GuestStateResponse{st}, err
}

type instanceView struct {
	Extensions []struct {
		Name        string `json:"name"`
		Type        string `json:"type"`
		Substatuses []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"substatuses"`
	} `json:"extensions"`
}

type moduleStatus struct {
	Status  string         `json:"status"`
	Message string         `json:"message"`
	States  map[string]any `json:"states"`
}

type agentStatus struct {
	Status              string        `json:"status"`
	KeyLatchStatus      *moduleStatus `json:"keyLatchStatus"`
	EBPFProgramStatus   *moduleStatus `json:"ebpfProgramStatus"`
	ProxyListenerStatus *moduleStatus `json:"proxyListenerStatus"`
}

// ParseGuestState extracts the guest state from an instance view document
// (the body of GET .../instanceView). The ProxyAgent substatus message is the
// agent's proxyAgentStatus object, or the whole status.json with it inside;
// both are accepted.
func ParseGuestState(instanceViewJSON []byte) (GuestState, error) {
	var iv instanceView
	if err := json.Unmarshal(instanceViewJSON, &iv); err != nil {
		return GuestState{}, fmt.Errorf("arm: %w: %w", ErrGuestStateUnavailable, err)
	}
	for _, ext := range iv.Extensions {
		if !strings.Contains(strings.ToLower(ext.Type+" "+ext.Name), "proxyagent") {
			continue
		}
		for _, ss := range ext.Substatuses {
			if !strings.Contains(strings.ToLower(ss.Code), "proxyagentstatus") {
				continue
			}
			return parseAgentMessage(ext.Name, ss.Message)
		}
	}
	return GuestState{}, ErrGuestStateUnavailable
}

func parseAgentMessage(ext, msg string) (GuestState, error) {
	var outer struct {
		ProxyAgentStatus *agentStatus `json:"proxyAgentStatus"`
	}
	if err := json.Unmarshal([]byte(msg), &outer); err != nil {
		return GuestState{}, fmt.Errorf("arm: %w: substatus message: %w", ErrGuestStateUnavailable, err)
	}
	a := outer.ProxyAgentStatus
	if a == nil {
		a = new(agentStatus)
		if err := json.Unmarshal([]byte(msg), a); err != nil {
			return GuestState{}, fmt.Errorf("arm: %w: substatus message: %w", ErrGuestStateUnavailable, err)
		}
	}
	if a.KeyLatchStatus == nil {
		return GuestState{}, fmt.Errorf("arm: %w: no keyLatchStatus", ErrGuestStateUnavailable)
	}
	st := GuestState{
		Extension:       ext,
		Status:          a.Status,
		KeyLatchStatus:  a.KeyLatchStatus.Status,
		KeyLatchMessage: a.KeyLatchStatus.Message,
	}
	if a.EBPFProgramStatus != nil {
		st.EBPFProgramStatus = a.EBPFProgramStatus.Status
	}
	if a.ProxyListenerStatus != nil {
		st.ProxyListenerStatus = a.ProxyListenerStatus.Status
	}
	s := a.KeyLatchStatus.States
	str := func(k string) string { v, _ := s[k].(string); return v }
	st.SecureChannelState = str("secureChannelState")
	st.WireServerRuleID = str("wireServerRuleId")
	st.IMDSRuleID = str("imdsRuleId")
	// The agent writes the incarnation as a decimal string; accept a number
	// too rather than report a latched key as missing.
	switch v := s["keyIncarnationId"].(type) {
	case string:
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return GuestState{}, fmt.Errorf("arm: %w: keyIncarnationId %q: %w", ErrGuestStateUnavailable, v, err)
		}
		n32 := int32(n)
		st.KeyIncarnationID = &n32
	case float64:
		if v != float64(int32(v)) {
			return GuestState{}, fmt.Errorf("arm: %w: keyIncarnationId %v", ErrGuestStateUnavailable, v)
		}
		n32 := int32(v)
		st.KeyIncarnationID = &n32
	}
	return st, nil
}

// WaitOptions are the options of WaitForGuestKeyIncarnation; nil is fine.
type WaitOptions struct {
	// Interval between reads of the instance view. Default 30s: the agent
	// reports every 60 s or so.
	Interval time.Duration
}

// WaitForGuestKeyIncarnation reads the guest state through read until the
// guest reports a latched key with incarnation at least want, or ctx ends.
// read is typically a closure over GetVirtualMachineGuestState. A missing
// report (ErrGuestStateUnavailable) is waited out; other errors end the wait.
func WaitForGuestKeyIncarnation(ctx context.Context, want int32, read func(context.Context) (GuestState, error), options *WaitOptions) (GuestState, error) {
	interval := 30 * time.Second
	if options != nil && options.Interval > 0 {
		interval = options.Interval
	}
	var last GuestState
	for {
		st, err := read(ctx)
		switch {
		case err == nil:
			last = st
			if st.KeyIncarnationID != nil && *st.KeyIncarnationID >= want {
				return st, nil
			}
		case !errors.Is(err, ErrGuestStateUnavailable):
			return last, err
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, fmt.Errorf("arm: guest did not latch key incarnation %d: %w", want, ctx.Err())
		case <-t.C:
		}
	}
}
