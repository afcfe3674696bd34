package main

import (
	"os"
	"strings"
	"testing"
)

// The unit keeps the upstream contract that image builders and cloud-init
// rely on: start before the network, restart always, the binary path, and
// egress limited to loopback and the two host addresses.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("azure-proxy-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			have[l] = true
		}
	}
	for _, want := range []string{
		"DefaultDependencies=no", "After=local-fs.target", "Before=network-pre.target", "Before=shutdown.target",
		"Conflicts=shutdown.target", "Type=simple", "ExecStart=/usr/sbin/azure-proxy-agent", "Restart=always", "RestartSec=5",
		"ProtectSystem=strict", "LogsDirectory=azure-proxy-agent", "StateDirectory=azure-proxy-agent",
		"IPAddressAllow=127.0.0.1 168.63.129.16 169.254.169.254", "IPAddressDeny=any", "NoNewPrivileges=yes",
		"WantedBy=multi-user.target",
	} {
		if !have[want] {
			t.Errorf("unit lacks %q", want)
		}
	}
}
