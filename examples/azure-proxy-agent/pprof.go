//go:build gpa_pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on the default mux
	"os"
)

// With -tags gpa_pprof (gpa-bench -agent-profile builds it so) the agent
// serves net/http/pprof on GPA_PPROF_ADDR, loopback only. Release builds
// never contain this file.
func init() {
	addr := os.Getenv("GPA_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go http.ListenAndServe(addr, nil)
}
