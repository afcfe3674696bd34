package main

import (
	"os"
	"slices"
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
	// Upstream's hardening, which ours must not fall below: the system
	// calls it denies, and no ownership changes.
	var filter, caps []string
	for l := range have {
		if f, ok := strings.CutPrefix(l, "SystemCallFilter=~"); ok {
			filter = append(filter, strings.Fields(f)...)
		}
		if c, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
			caps = append(caps, strings.Fields(c)...)
		}
	}
	for _, group := range []string{"@clock", "@cpu-emulation", "@module", "@mount", "@obsolete", "@raw-io", "@reboot", "@resources", "@swap"} {
		if !slices.Contains(filter, group) {
			t.Errorf("SystemCallFilter does not deny %s as upstream's unit does", group)
		}
	}
	for _, c := range caps {
		if c == "CAP_CHOWN" || c == "CAP_SETUID" || c == "CAP_SYS_MODULE" || strings.HasPrefix(c, "~") {
			t.Errorf("CapabilityBoundingSet keeps %s, which upstream's unit drops and the agent does not use", c)
		}
	}
	if len(caps) == 0 {
		t.Error("unit has no CapabilityBoundingSet allow list")
	}
}
