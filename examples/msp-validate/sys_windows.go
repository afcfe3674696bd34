//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// defaultRoot is the system drive, under which C:\WindowsAzure lives.
var defaultRoot = systemDrive() + `\`

func systemDrive() string {
	if d := os.Getenv("SystemDrive"); d != "" {
		return d
	}
	return "C:"
}

// fileOwner is not used on Windows: the key folder is protected by ACLs,
// which these checks do not read.
func fileOwner(fs.FileInfo) (uint32, bool) { return 0, false }

// scmQuerier reads services through the service control manager with
// query rights only, so it works without changing anything and, for most
// services, without Administrator rights. mgr.Connect and Mgr.OpenService
// ask for full access, hence the direct calls.
type scmQuerier struct{}

func liveServices() ServiceQuerier { return scmQuerier{} }

func (scmQuerier) QueryService(_ context.Context, name string) (ServiceStatus, error) {
	scm, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("opening the service manager: %w", err)
	}
	defer windows.CloseServiceHandle(scm)
	namep, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return ServiceStatus{}, err
	}
	h, err := windows.OpenService(scm, namep, windows.SERVICE_QUERY_STATUS|windows.SERVICE_QUERY_CONFIG)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return ServiceStatus{}, fmt.Errorf("%s: %w", name, ErrServiceNotFound)
	}
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("opening %s: %w", name, err)
	}
	s := &mgr.Service{Name: name, Handle: h}
	defer s.Close()
	q, err := s.Query()
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("querying %s: %w", name, err)
	}
	out := ServiceStatus{State: stateName(q.State), StartType: "UNKNOWN", Win32ExitCode: q.Win32ExitCode, ServiceExitCode: q.ServiceSpecificExitCode}
	if c, err := s.Config(); err == nil {
		out.StartType = startTypeName(c.StartType)
	}
	return out, nil
}

// stateName names a state the way sc query prints it.
func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "STOPPED"
	case svc.StartPending:
		return "START_PENDING"
	case svc.StopPending:
		return "STOP_PENDING"
	case svc.Running:
		return "RUNNING"
	case svc.ContinuePending:
		return "CONTINUE_PENDING"
	case svc.PausePending:
		return "PAUSE_PENDING"
	case svc.Paused:
		return "PAUSED"
	}
	return fmt.Sprintf("STATE_%d", s)
}

// startTypeName names a start type the way sc qc prints it.
func startTypeName(t uint32) string {
	switch t {
	case windows.SERVICE_BOOT_START:
		return "BOOT_START"
	case windows.SERVICE_SYSTEM_START:
		return "SYSTEM_START"
	case mgr.StartAutomatic:
		return "AUTO_START"
	case mgr.StartManual:
		return "DEMAND_START"
	case mgr.StartDisabled:
		return "DISABLED"
	}
	return fmt.Sprintf("START_%d", t)
}

// liveVersion reads the version with RtlGetVersion, which, unlike
// GetVersionEx, is not lied to by compatibility shims.
func liveVersion() func() (OSVersion, error) {
	return func() (OSVersion, error) {
		v := windows.RtlGetVersion()
		const workstation = 1 // VER_NT_WORKSTATION
		return OSVersion{Major: v.MajorVersion, Minor: v.MinorVersion, Build: v.BuildNumber, Server: v.ProductType != workstation}, nil
	}
}
