package arm_test

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
	"github.com/metadatasec/gpa/arm/armtest"
)

func TestResetVirtualMachineKeyConcurrent(t *testing.T) {
	const start, n = 7, 10
	srv := newServer(t, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux",
		ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":7,"wireServer":{"mode":"Enforce"}}`})
	c := newClient(t, srv, nil)

	var wg sync.WaitGroup
	got := make([]int32, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			r, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", &arm.ClientBeginResetVirtualMachineKeyOptions{MaxAttempts: 4 * n, RetryDelay: 5 * time.Millisecond})
			if err != nil {
				errs[i] = err
				return
			}
			if r.KeyIncarnationID <= r.Previous {
				errs[i] = errors.New("not raised")
			}
			if _, err := r.Poller.PollUntilDone(ctx(t), fast); err != nil {
				errs[i] = err
				return
			}
			got[i] = r.KeyIncarnationID
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	var want []int32
	for i := range n {
		want = append(want, int32(start+1+i))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("returned values (-want +got):\n%s", d)
	}
	if k := srv.KeyIncarnationID(vmID("vm1")); k != start+n {
		t.Errorf("final keyIncarnationId = %d, want %d", k, start+n)
	}
	// Every PATCH that went out was conditional and carried only the key.
	for _, r := range writes(srv) {
		if r.Header.Get("If-Match") == "" {
			t.Errorf("PATCH without If-Match")
		}
		var body struct {
			Properties struct {
				SecurityProfile struct {
					ProxyAgentSettings map[string]any `json:"proxyAgentSettings"`
				} `json:"securityProfile"`
			} `json:"properties"`
		}
		mustUnmarshal(t, r.Body, &body)
		if keys := slices.Sorted(maps.Keys(body.Properties.SecurityProfile.ProxyAgentSettings)); !slices.Equal(keys, []string{"keyIncarnationId"}) {
			t.Errorf("PATCH sent %v", keys)
		}
	}
	jsonEqual(t, "settings", srv.ProxyAgentSettings(vmID("vm1")), `{"enabled":true,"keyIncarnationId":17,"wireServer":{"mode":"Enforce"}}`)
}

func TestResetKeyRetriesOn412(t *testing.T) {
	srv := newServer(t, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true}`})
	c := newClient(t, srv, nil)
	lost := armtest.ServiceError{Method: http.MethodPatch, Status: http.StatusPreconditionFailed, Code: "PreconditionFailed", Message: "etag mismatch"}

	t.Run("gives up after MaxAttempts", func(t *testing.T) {
		srv.FailNextRequest(lost)
		_, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", &arm.ClientBeginResetVirtualMachineKeyOptions{MaxAttempts: 1})
		if !errors.Is(err, arm.ErrPreconditionFailed) {
			t.Fatalf("err = %v, want ErrPreconditionFailed", err)
		}
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusPreconditionFailed {
			t.Errorf("err does not wrap the 412: %v", err)
		}
		if k := srv.KeyIncarnationID(vmID("vm1")); k != 0 {
			t.Errorf("key changed to %d", k)
		}
	})
	t.Run("reads again and wins", func(t *testing.T) {
		srv.ResetRequests()
		srv.FailNextRequest(lost)
		r, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", &arm.ClientBeginResetVirtualMachineKeyOptions{MaxAttempts: 2, RetryDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.KeyIncarnationID != 1 {
			t.Errorf("KeyIncarnationID = %d", r.KeyIncarnationID)
		}
		var methods []string
		for _, q := range srv.Requests() {
			methods = append(methods, q.Method)
		}
		if d := cmp.Diff([]string{"GET", "PATCH", "GET", "PATCH"}, methods); d != "" {
			t.Errorf("requests (-want +got):\n%s", d)
		}
	})
}

func TestResetKeyAtMaximum(t *testing.T) {
	srv := newServer(t, nil)
	srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":2147483647}`})
	c := newClient(t, srv, nil)
	_, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", nil)
	if !errors.Is(err, arm.ErrKeyIncarnationNotIncreasing) {
		t.Fatalf("err = %v", err)
	}
	if len(writes(srv)) != 0 {
		t.Error("a write was sent")
	}
}

func TestResetScaleSetInstanceKey(t *testing.T) {
	srv := newServer(t, &armtest.Options{LROPolls: 2})
	ss := vmssID("ss1")
	srv.AddScaleSet(ss, armtest.ScaleSet{Location: region, OSType: "Linux", UpgradeMode: "Manual"})
	extra := map[string]any{"hardwareProfile": map[string]any{"vmSize": "Standard_D2s_v5"}, "futureField": []any{"kept"}}
	srv.AddScaleSetInstance(ss, "3", armtest.VM{Location: region, OSType: "Linux", Extra: extra,
		ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":1,"imds":{"mode":"Audit"}}`})
	before, _ := srv.Resource(ss + "/virtualMachines/3")
	c := newClient(t, srv, nil)

	r, err := c.BeginResetScaleSetInstanceKey(ctx(t), rg, "ss1", "3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Previous != 1 || r.KeyIncarnationID != 2 {
		t.Errorf("reset %d -> %d, want 1 -> 2", r.Previous, r.KeyIncarnationID)
	}
	res, err := r.Poller.PollUntilDone(ctx(t), fast)
	if err != nil {
		t.Fatal(err)
	}
	if k := res.ProxyAgentSettings().KeyIncarnationID; k == nil || *k != 2 {
		t.Errorf("result keyIncarnationId = %v", k)
	}
	w := writes(srv)
	if len(w) != 1 || w[0].Method != http.MethodPut || w[0].Path != ss+"/virtualMachines/3" {
		t.Fatalf("writes = %+v", w)
	}
	// The PUT is the body read, with only the key raised.
	var sent, read map[string]any
	mustUnmarshal(t, w[0].Body, &sent)
	mustUnmarshal(t, before, &read)
	read["properties"].(map[string]any)["securityProfile"].(map[string]any)["proxyAgentSettings"].(map[string]any)["keyIncarnationId"] = 2.0
	if d := cmp.Diff(read, sent); d != "" {
		t.Errorf("PUT body differs from the body read beyond the key (-read +sent):\n%s", d)
	}
	if w[0].Header.Get("If-Match") != read["etag"] {
		t.Errorf("If-Match = %q, want %q", w[0].Header.Get("If-Match"), read["etag"])
	}
}

func mustUnmarshal(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("unmarshal %q: %v", b, err)
	}
}

// TestResetKeyExplicitValue: the guide's "keyIncarnationId can only be
// incremented", for a reset that names its value: equal to the current one
// is refused like lower, before any write; higher is written as given.
func TestResetKeyExplicitValue(t *testing.T) {
	tests := []struct {
		name string
		want int32
		err  error
	}{
		{"lower than the current one", 3, arm.ErrKeyIncarnationNotIncreasing},
		{"equal to the current one", 5, arm.ErrKeyIncarnationNotIncreasing},
		{"higher", 9, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, nil)
			srv.AddVirtualMachine(vmID("vm1"), armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":5}`})
			ss := vmssID("ss1")
			srv.AddScaleSet(ss, armtest.ScaleSet{Location: region, OSType: "Linux", UpgradeMode: "Manual"})
			srv.AddScaleSetInstance(ss, "0", armtest.VM{Location: region, OSType: "Linux", ProxyAgentSettings: `{"enabled":true,"keyIncarnationId":5}`})
			c := newClient(t, srv, nil)
			r, err := c.BeginResetVirtualMachineKey(ctx(t), rg, "vm1", &arm.ClientBeginResetVirtualMachineKeyOptions{KeyIncarnationID: &tt.want})
			r2, err2 := c.BeginResetScaleSetInstanceKey(ctx(t), rg, "ss1", "0", &arm.ClientBeginResetScaleSetInstanceKeyOptions{KeyIncarnationID: &tt.want})
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !errors.Is(err2, tt.err) {
					t.Fatalf("errors = %v, %v; want %v", err, err2, tt.err)
				}
				if w := writes(srv); len(w) != 0 {
					t.Errorf("refused reset wrote %d times", len(w))
				}
				return
			}
			if err != nil || err2 != nil {
				t.Fatal(err, err2)
			}
			if r.KeyIncarnationID != tt.want || r2.KeyIncarnationID != tt.want || r.Previous != 5 {
				t.Errorf("resets wrote %d and %d, want %d", r.KeyIncarnationID, r2.KeyIncarnationID, tt.want)
			}
			if got := srv.KeyIncarnationID(vmID("vm1")); got != tt.want {
				t.Errorf("stored %d", got)
			}
		})
	}
}
