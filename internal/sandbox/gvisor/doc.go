// Package gvisor is the gVisor backend (New): each step in a fresh
// `runsc run` sandbox generated as an OCI bundle from the policy, inside a
// per-run cgroup, supervised by sandbox.Watch. It must not know the native
// init, warm templates, languages or anything above the Sandbox interface.
package gvisor
