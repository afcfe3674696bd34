package main

import "strings"

const auditLogsHelp = "a file, glob, directory or Log Analytics JSON export; repeat the flag for more"

// auditLogs collects the --audit-log values, read by policy.AuditLogs.
type auditLogs []string

func (a *auditLogs) String() string { return strings.Join(*a, " ") }

func (a *auditLogs) Set(v string) error {
	*a = append(*a, v)
	return nil
}
