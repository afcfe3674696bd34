package status

import "runtime"

// Where upstream keeps its files. The status folder is fixed upstream, not
// taken from the config's logFolder.
const (
	LinuxStatusPath   = "/var/log/azure-proxy-agent/status.json"
	WindowsStatusPath = `C:\WindowsAzure\ProxyAgent\Logs\status.json`
	// LinuxKeyDir holds provisioned.tag and status.tag (latchKeyFolder).
	LinuxKeyDir = "/var/lib/azure-proxy-agent/keys"
)

// Names of the provisioning state files inside the key folder.
const (
	ProvisionedTagFile = "provisioned.tag"
	StatusTagFile      = "status.tag"
)

// DefaultStatusPath returns where the agent writes status.json on this
// operating system.
func DefaultStatusPath() string {
	if runtime.GOOS == "windows" {
		return WindowsStatusPath
	}
	return LinuxStatusPath
}
