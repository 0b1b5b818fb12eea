// Package policy is what the inside of every sandbox is, defined once as
// data: the code's uid and NOFILE, the denied syscalls and clone flags,
// the /etc allowlist, the root's directories, devices and masked /proc
// files. The native init, the warm pool's C helper (Header) and gVisor's
// OCI bundle each render it; TestPolicyOnEveryBackend (internal/api)
// checks they agree. It must not know how any backend applies it.
package policy
