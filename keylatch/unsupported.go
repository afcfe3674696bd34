//go:build !unix

package keylatch

// The key store relies on POSIX ownership, modes and O_NOFOLLOW to keep the
// key root-only. On Windows the platform's own agent latches the key (with
// DPAPI); this package does not build there, and says so here.
const _ = keylatchRequiresUnixFileSecurity
