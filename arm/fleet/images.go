package fleet

import (
	"strconv"
	"strings"
)

// ImageSupport is whether the MSP documentation lists an image as supported.
type ImageSupport string

// The answers SupportOf gives.
const (
	ImageSupported   ImageSupport = "supported"
	ImageUnsupported ImageSupport = "unsupported"
	// ImageUnknown: a custom or gallery image, or a marketplace image the
	// documentation does not name; check it by hand.
	ImageUnknown ImageSupport = "unknown"
)

// SupportOf classifies an image given as publisher:offer:sku after the
// operating systems the MSP documentation lists: Windows 10 and later,
// Windows Server 2019, 2022 and 2025, Mariner 2.0, Azure Linux 3.0, Ubuntu
// 20.04 and later are supported; RHEL 9+, Rocky 9+ and SLES 15 SP4+ are not.
func SupportOf(image string) ImageSupport {
	parts := strings.Split(strings.ToLower(image), ":")
	if len(parts) != 3 {
		return ImageUnknown
	}
	pub, offer, sku := parts[0], parts[1], parts[2]
	switch {
	case pub == "canonical":
		if v := ubuntuVersion(offer + " " + sku); v > 0 {
			if v >= 20 {
				return ImageSupported
			}
			return ImageUnsupported
		}
	case pub == "microsoftwindowsserver":
		for _, y := range []string{"2019", "2022", "2025"} {
			if strings.Contains(sku, y) {
				return ImageSupported
			}
		}
		return ImageUnsupported
	case pub == "microsoftwindowsdesktop":
		if strings.Contains(offer, "windows-10") || strings.Contains(offer, "windows-11") || strings.Contains(offer, "windows10") || strings.Contains(offer, "windows11") {
			return ImageSupported
		}
	case pub == "microsoftcblmariner":
		if strings.Contains(offer, "azure-linux-3") || strings.Contains(sku, "cbl-mariner-2") || strings.Contains(offer+sku, "mariner-2") {
			return ImageSupported
		}
	case pub == "redhat" && strings.HasPrefix(offer, "rhel"):
		if major(sku) >= 9 {
			return ImageUnsupported
		}
	case strings.Contains(pub, "rocky") || strings.Contains(offer, "rocky"):
		if major(sku) >= 9 || major(offer) >= 9 {
			return ImageUnsupported
		}
	case pub == "suse" && strings.HasPrefix(offer, "sles-15"):
		if sp := strings.Index(offer+sku, "sp"); sp >= 0 && major((offer + sku)[sp+2:]) >= 4 {
			return ImageUnsupported
		}
	}
	return ImageUnknown
}

// ubuntuVersion finds the major release in Canonical's offer or sku names
// ("ubuntu-24_04-lts", "0001-com-ubuntu-server-jammy", "22_04-lts").
func ubuntuVersion(s string) int {
	for name, v := range map[string]int{"focal": 20, "jammy": 22, "noble": 24, "bionic": 18, "xenial": 16} {
		if strings.Contains(s, name) {
			return v
		}
	}
	for i := 0; i+4 < len(s); i++ {
		if isDigit(s[i]) && isDigit(s[i+1]) && (s[i+2] == '_' || s[i+2] == '.') && isDigit(s[i+3]) && isDigit(s[i+4]) {
			n, _ := strconv.Atoi(s[i : i+2])
			return n
		}
	}
	return 0
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// major returns the leading number of s, 0 when there is none.
func major(s string) int {
	i := 0
	for i < len(s) && !isDigit(s[i]) {
		i++
	}
	j := i
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	n, _ := strconv.Atoi(s[i:j])
	return n
}
