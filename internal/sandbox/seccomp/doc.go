// Package seccomp renders the policy's syscall rules as seccomp filters:
// loaded by the native init into itself before the steps run, and
// exported as raw BPF programs for the warm pool's forked children to load.
// It must not know namespaces, mounts, processes or backends: only which
// calls fail and how.
package seccomp
