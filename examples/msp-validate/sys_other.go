//go:build !linux && !windows

package main

import "io/fs"

// defaultRoot is the root file system the checks read on this OS.
const defaultRoot = "/"

// fileOwner is not implemented here; ownership is not checked.
func fileOwner(fs.FileInfo) (uint32, bool) { return 0, false }

// liveServices is the Windows service manager; there is none here.
func liveServices() ServiceQuerier { return nil }

// liveVersion is the Windows version; there is none here.
func liveVersion() func() (OSVersion, error) { return nil }
