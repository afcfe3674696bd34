package proxy

import "syscall"

// syscallEMFILE is retried by the accept loop: running out of descriptors
// is transient.
var syscallEMFILE = syscall.EMFILE
