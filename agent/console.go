package agent

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultSerialConsole is where upstream writes its start-up and
// provisioning lines on Linux.
const DefaultSerialConsole = "/dev/console"

// serialConsole writes upstream's serial console lines,
// "<UTC time> azure-proxy-agent_<version>(<pid>) - <message>\n", best
// effort: the file is opened for each line without blocking (a console
// that is busy or absent loses the line, it never stalls the agent).
type serialConsole struct {
	path    string
	version string
	now     func() time.Time
}

// line writes one line; errors are dropped, as upstream only prints them.
func (c *serialConsole) line(msg string) {
	if c == nil || c.path == "" {
		return
	}
	text := fmt.Sprintf("%s azure-proxy-agent_%s(%d) - %s\n", c.now().UTC().Format("2006-01-02T15:04:05.000"), c.version, os.Getpid(), msg)
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(text)
}

// Write makes the console the provisioning's status.ProvisionOptions.Console:
// each write is one message, its trailing line break dropped.
func (c *serialConsole) Write(p []byte) (int, error) {
	c.line(strings.TrimRight(string(p), "\r\n"))
	return len(p), nil
}

// serialConsolePath maps the config file's serialConsolePath: upstream's
// /dev/console when absent, none for "off".
func serialConsolePath(s string) string {
	switch s {
	case "":
		return DefaultSerialConsole
	case "off":
		return ""
	}
	return s
}
