package api

import (
	"errors"
	"net/netip"
	"regexp"
)

// MaxNFSPath bounds an NFS volume's path (NFSv3's MNTPATHLEN).
const MaxNFSPath = 1024

var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$`)

// validateNFSServer accepts an IP address or a DNS host name, without a
// port: the server's portmapper says where its services are.
func validateNFSServer(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if len(s) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if !hostLabel.MatchString(s[start:i]) {
				return errors.New("must be an IP address or a host name")
			}
			start = i + 1
		}
	}
	return nil
}
