// Package host holds what a backend claims on this machine while it lives
// (Host): an instance number K under a host-wide lock, the band of host
// uids and the cgroup subtree K names, tmpfs workdirs under RunDir/i<K>,
// and the removal of whatever a crashed predecessor with the same K left.
// Config is the part of a backend's configuration that decides these. The
// native backend, the warm pool over it and gVisor use it; it must not
// know how any of them runs code.
package host
