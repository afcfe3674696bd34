//go:build linux

package main

import (
	"io/fs"
	"syscall"
)

// defaultRoot is the root file system the checks read on this OS.
const defaultRoot = "/"

// fileOwner returns the owner uid of fi, which os.DirFS fills from stat(2).
func fileOwner(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// liveServices is the Windows service manager; there is none here.
func liveServices() ServiceQuerier { return nil }

// liveVersion is the Windows version; there is none here.
func liveVersion() func() (OSVersion, error) { return nil }
