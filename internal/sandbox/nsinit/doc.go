// Package nsinit is the process at the inside of a native sandbox: this
// same binary, re-executed as pid 1 of fresh namespaces (MaybeInit), that
// reads its Config, builds the private read-only root, writes the spec's
// files, drops privileges, loads the seccomp filter and runs the steps,
// reporting Events; or, for a warm template, starts the zygote as root of
// its user namespace. Both the native backend and the warm pool start it.
// It must not know cgroups, slots, the server or which backend started it.
package nsinit
