package arm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// KeyReset is a key reset the service accepted.
type KeyReset[T any] struct {
	// Previous is the keyIncarnationId the reset was based on. A reset
	// resumed from a token carries the values of the original call.
	Previous int32
	// KeyIncarnationID is the value this call wrote; no other call
	// succeeding against the same resource wrote the same value.
	KeyIncarnationID int32
	// Poller follows the update until the service finished it. The guest
	// latches the new key afterwards: see WaitForGuestKeyIncarnation.
	Poller *runtime.Poller[T]
}

// BeginResetVirtualMachineKey raises the VM's keyIncarnationId by one, which
// makes the host and the guest agent latch a new key. It reads the current
// value and PATCHes the raised one with If-Match on the etag it read, so of
// two concurrent resets only one can win a round; the loser reads again and
// raises further. Every successful call therefore returns a distinct, strictly
// larger value.
func (c *Client) BeginResetVirtualMachineKey(ctx context.Context, resourceGroup, name string, options *ClientBeginResetVirtualMachineKeyOptions) (KeyReset[VirtualMachineResponse], error) {
	o := optional(options)
	ro := resetOptions{resumeToken: o.ResumeToken, maxAttempts: o.MaxAttempts, retryDelay: o.RetryDelay, key: o.KeyIncarnationID}
	path, err := c.resourcePath(resourceGroup, "virtualMachines", name)
	if err != nil {
		return KeyReset[VirtualMachineResponse]{}, err
	}
	const api = "Client.BeginResetVirtualMachineKey"
	return resetLoop[VirtualMachineResponse](ctx, c, api, ro, func(ctx context.Context) (int32, int32, *http.Response, error) {
		vm, err := c.GetVirtualMachine(ctx, resourceGroup, name, nil)
		if err != nil {
			return 0, 0, nil, err
		}
		cur, next, err := raise("securityProfile.proxyAgentSettings", vm.ProxyAgentSettings(), ro.key)
		if err != nil {
			return 0, 0, nil, err
		}
		if deref(vm.ETag) == "" {
			return 0, 0, nil, fmt.Errorf("arm: %w: VM %s has no etag, refusing an unconditional reset", ErrInvalidRequest, name)
		}
		var body vmPatch
		body.Properties.SecurityProfile.ProxyAgentSettings = &ProxyAgentSettings{KeyIncarnationID: &next}
		resp, err := c.startLRO(ctx, api, http.MethodPatch, path, c.computeAPI, body, &requestOptions{ifMatch: *vm.ETag}, http.StatusOK, http.StatusAccepted)
		return cur, next, resp, err
	})
}

// BeginResetScaleSetInstanceKey raises the keyIncarnationId of one Uniform
// scale-set instance, as BeginResetVirtualMachineKey does for a VM. The
// instance resource only takes PUT, so the client writes back the body it
// read (every field, known to this package or not) with just the key raised.
func (c *Client) BeginResetScaleSetInstanceKey(ctx context.Context, resourceGroup, scaleSet, instanceID string, options *ClientBeginResetScaleSetInstanceKeyOptions) (KeyReset[ScaleSetInstanceResponse], error) {
	o := optional(options)
	ro := resetOptions{resumeToken: o.ResumeToken, maxAttempts: o.MaxAttempts, retryDelay: o.RetryDelay, key: o.KeyIncarnationID}
	path, err := c.resourcePath(resourceGroup, "virtualMachineScaleSets", scaleSet, "virtualMachines", instanceID)
	if err != nil {
		return KeyReset[ScaleSetInstanceResponse]{}, err
	}
	const api = "Client.BeginResetScaleSetInstanceKey"
	return resetLoop[ScaleSetInstanceResponse](ctx, c, api, ro, func(ctx context.Context) (int32, int32, *http.Response, error) {
		var raw json.RawMessage
		if _, err := c.call(ctx, "Client.GetScaleSetInstance", http.MethodGet, path, c.computeAPI, nil, nil, &raw, http.StatusOK); err != nil {
			return 0, 0, nil, err
		}
		var inst ScaleSetInstance
		if err := json.Unmarshal(raw, &inst); err != nil {
			return 0, 0, nil, fmt.Errorf("arm: decode instance: %w", err)
		}
		cur, next, err := raise("securityProfile.proxyAgentSettings", inst.ProxyAgentSettings(), ro.key)
		if err != nil {
			return 0, 0, nil, err
		}
		if deref(inst.ETag) == "" {
			return 0, 0, nil, fmt.Errorf("arm: %w: instance %s has no etag, refusing an unconditional reset", ErrInvalidRequest, instanceID)
		}
		body, err := setKeyIncarnation(raw, next)
		if err != nil {
			return 0, 0, nil, err
		}
		resp, err := c.startLRO(ctx, api, http.MethodPut, path, c.computeAPI, json.RawMessage(body), &requestOptions{ifMatch: *inst.ETag}, http.StatusOK, http.StatusAccepted)
		return cur, next, resp, err
	})
}

// raise returns the current keyIncarnationId and the one to write: want
// when set, else the current one plus one.
func raise(path string, s *ProxyAgentSettings, want *int32) (cur, next int32, err error) {
	if s != nil && s.KeyIncarnationID != nil {
		cur = *s.KeyIncarnationID
	}
	if want != nil {
		if err := checkKeyAbove(path, *want, cur); err != nil {
			return 0, 0, err
		}
		return cur, *want, nil
	}
	if cur == math.MaxInt32 {
		return 0, 0, clientError(CodeBadRequest, ErrKeyIncarnationNotIncreasing, path+".keyIncarnationId",
			"already at the int32 maximum", "the key can no longer be reset on this resource; recreate it")
	}
	return cur, cur + 1, nil
}

// resetLoop repeats round until it is not refused by a 412, or resumes a
// reset from its token.
func resetLoop[T any](ctx context.Context, c *Client, api string, o resetOptions, round func(context.Context) (int32, int32, *http.Response, error)) (KeyReset[T], error) {
	if o.resumeToken != "" {
		p, rt, err := resumePoller[T](c, o.resumeToken)
		if err != nil {
			return KeyReset[T]{}, err
		}
		r := KeyReset[T]{Poller: p}
		if rt != nil {
			r.Previous, r.KeyIncarnationID = rt.Previous, rt.KeyIncarnationID
		}
		return r, nil
	}
	attempts, delay := 10, 200*time.Millisecond
	if o.maxAttempts > 0 {
		attempts = o.maxAttempts
	}
	if o.retryDelay > 0 {
		delay = o.retryDelay
	}
	ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, api)
	var lastErr error
	for i := range attempts {
		if i > 0 {
			// Random pauses spread competing writers so one of them wins
			// the next round.
			t := time.NewTimer(rand.N(delay) + time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return KeyReset[T]{}, ctx.Err()
			case <-t.C:
			}
		}
		cur, next, resp, err := round(ctx)
		if errors.Is(err, ErrPreconditionFailed) {
			c.log.DebugContext(ctx, "key reset lost a race, reading again", "api", api, "attempt", i+1)
			lastErr = err
			continue
		}
		if err != nil {
			return KeyReset[T]{}, err
		}
		p, err := newPoller[T](c, resp, &resetToken{Previous: cur, KeyIncarnationID: next})
		if err != nil {
			return KeyReset[T]{}, err
		}
		return KeyReset[T]{Previous: cur, KeyIncarnationID: next, Poller: p}, nil
	}
	return KeyReset[T]{}, fmt.Errorf("arm: key reset gave up after %d attempts: %w", attempts, lastErr)
}

// setKeyIncarnation returns the resource JSON raw with
// properties.securityProfile.proxyAgentSettings.keyIncarnationId set to v
// and everything else kept as read, numbers included.
func setKeyIncarnation(raw []byte, v int32) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("arm: decode resource: %w", err)
	}
	m := doc
	for _, k := range []string{"properties", "securityProfile", "proxyAgentSettings"} {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m["keyIncarnationId"] = v
	return json.Marshal(doc)
}
