// Package native is the Linux namespace backend (New): each run in fresh
// user, mount, pid, ipc, uts and net namespaces under its own cgroup,
// with nsinit as pid 1, supervised by sandbox.Watch and classified by
// sandbox.Classify. It lends its host and init to a warm pool that wraps
// it (HostResources, InitBinary). It must not know languages, warm
// templates, gVisor or anything above the Sandbox interface.
package native
