package msp

import "unsafe"

// unsafeString turns a freshly made byte slice that nothing else references
// into a string without copying it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
