ebpfProgramStatus - Failed to start redirector: Failed to load program &apos;connect4&apos; with error: the BPF_PROG_LOAD syscall failed. Verifier output: invalid argument
