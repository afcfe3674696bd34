// Package logfile writes the agent's log files as upstream lays them out:
// append-only, archived when a file would grow past a size limit, at most
// a given number of files kept, and never written through a symlink
// planted at the log's path (the agent runs as root).
//
// The agent uses it for ProxyAgent.log and ProxyAgent.Connection.log; an
// embedder may use it for its own audit sink.
package logfile
