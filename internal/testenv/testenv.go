// Package testenv decides whether tests that need privileges or kernel
// features run. Every such test calls one of its helpers first, so the rule
// lives in one place: without the privilege the test is skipped with the
// reason, except under CI=true, where a missing privilege fails the test,
// because CI runs as root and must never silently skip.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips t with the reason, or fails it under CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true but this test cannot run: "+format, args...)
	}
	t.Skipf(format, args...)
}

// MustBeRoot skips (or under CI fails) t unless the process runs as root.
func MustBeRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root (euid %d); run as root or with CI=true", os.Geteuid())
	}
}

// Require skips (or under CI fails) t when err is not nil, naming what was
// missing.
func Require(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		SkipOrFail(t, "needs %s: %v", what, err)
	}
}
