package ebpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -target bpfel -tags linux -type gpa_destination_entry -type gpa_audit_key -type gpa_audit_event -type gpa_caller_record -type gpa_caller_key -type gpa_exempt_key -type gpa_exemption -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" redirect redirect.c
