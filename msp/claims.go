package msp

// Claims describe the process behind a request, as the proxy resolved it
// from what the kernel recorded at connect time. The JSON names are the ones
// upstream writes in its logs and summaries.
type Claims struct {
	UserID          uint32   `json:"userId"`
	UserName        string   `json:"userName"`
	UserGroups      []string `json:"userGroups"`
	ProcessID       uint32   `json:"processId"`
	ProcessName     string   `json:"processName"`
	ProcessFullPath string   `json:"processFullPath"`
	ProcessCmdLine  string   `json:"processCmdLine"`
	RunAsElevated   bool     `json:"runAsElevated"`
	ClientIP        string   `json:"clientIp"`
	ClientPort      uint16   `json:"clientPort"`
}

// InGroup reports whether name is one of the caller's groups.
func (c *Claims) InGroup(name string) bool {
	for _, g := range c.UserGroups {
		if g == name {
			return true
		}
	}
	return false
}

// Values of the x-ms-azure-host-claims header, byte-exact as upstream sends
// them: a space after "{", none before "}", and the boolean as a string.
const (
	ClaimsHeaderRoot    = `{ "isRoot": "true"}`
	ClaimsHeaderNonRoot = `{ "isRoot": "false"}`
)

// ClaimsHeaderValue returns the x-ms-azure-host-claims value for a caller.
func ClaimsHeaderValue(elevated bool) string {
	if elevated {
		return ClaimsHeaderRoot
	}
	return ClaimsHeaderNonRoot
}
