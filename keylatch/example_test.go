package keylatch_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/metadatasec/gpa/keylatch"
	"github.com/metadatasec/gpa/msp"
	"github.com/metadatasec/gpa/msp/msptest"
)

// Run a Latcher against a simulated host until it latches, then read the
// snapshot the proxy would use.
func ExampleLatcher() {
	host := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "ws"},
		msp.EndpointIMDS:       {Mode: msp.ModeAudit, DefaultAccess: msp.AccessAllow, ID: "imds"},
	}})
	defer host.Close()

	base, _ := os.MkdirTemp("", "keylatch-example")
	defer os.RemoveAll(base)
	store, err := keylatch.OpenStore(&keylatch.StoreOptions{
		Dir:   filepath.Join(base, "keys"),
		Owner: uint32(os.Geteuid()), // root in production
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	latcher, err := keylatch.NewLatcher(&keylatch.LatcherOptions{
		Client: keylatch.NewClient(&keylatch.ClientOptions{Addr: host.WireServerAddr()}),
		Store:  store,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	updates, cancelSub := latcher.Subscribe()
	defer cancelSub()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		latcher.Run(ctx)
	}()
	// The loop writes in the key folder: it ends before the folder goes.
	defer func() {
		cancel()
		<-done
	}()

	for {
		select {
		case <-ctx.Done():
			fmt.Println("not latched:", latcher.Status().Message)
			return
		case snap := <-updates:
			if !snap.Latched() {
				continue
			}
			fmt.Println(snap.State)
			fmt.Println("redirect:", keylatch.RedirectSet(snap))
			_, err := os.Stat(store.KeyPath(snap.Key.GUID))
			fmt.Println("key stored:", err == nil)
			return
		}
	}
	// Output:
	// WireServer Enforce -  IMDS Audit - HostGA Enforce
	// redirect: [wireserver imds hostga]
	// key stored: true
}

// A latcher created over the key folder of an earlier run starts from what
// that run knew, marked Restored, and signs with its key while the host does
// not answer; the first answered poll confirms it.
func ExampleLatcher_restart() {
	host := msptest.NewHost(&msptest.Options{Rules: map[msp.Endpoint]*msp.AuthorizationItem{
		msp.EndpointWireServer: {Mode: msp.ModeEnforce, DefaultAccess: msp.AccessAllow, ID: "ws"},
	}})
	defer host.Close()
	base, _ := os.MkdirTemp("", "keylatch-example")
	defer os.RemoveAll(base)
	newLatcher := func() *keylatch.Latcher {
		store, err := keylatch.OpenStore(&keylatch.StoreOptions{Dir: filepath.Join(base, "keys"), Owner: uint32(os.Geteuid())})
		if err != nil {
			panic(err)
		}
		l, err := keylatch.NewLatcher(&keylatch.LatcherOptions{
			Client: keylatch.NewClient(&keylatch.ClientOptions{Addr: host.WireServerAddr()}),
			Store:  store,
		})
		if err != nil {
			panic(err)
		}
		return l
	}
	ctx := context.Background()

	first := newLatcher()
	first.Poll(ctx)
	key := first.Current().Key.GUID

	// The agent restarts while the key-status endpoint fails.
	host.SetFault(msptest.Fault{Kind: msptest.FaultStatus, Endpoint: msp.EndpointWireServer, Path: keylatch.StatusPath})
	second := newLatcher()
	second.Poll(ctx)
	snap := second.Current()
	fmt.Println(snap.State, "| restored:", snap.Restored, "| same key:", snap.Key.GUID == key, "| signs:", snap.Signer != nil)

	host.ClearFaults()
	second.Poll(ctx)
	fmt.Println("restored:", second.Current().Restored)
	// Output:
	// WireServer Enforce -  IMDS Disabled - HostGA Enforce | restored: true | same key: true | signs: true
	// restored: false
}
