ebpfProgramStatus - Failed to start redirector: Failed to attach program &apos;connect4&apos; with error: bpf_prog_attach failed
