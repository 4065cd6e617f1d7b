//go:build !amd64

package linux

// archProfile: no table for this architecture yet; containers run
// without a seccomp filter (capabilities, no_new_privs and the user
// namespace still apply).
func archProfile() *sysProfile { return nil }
