// Package cgroup owns the kernel's accounting and limits of runs: one
// instance's cgroup tree on v1 (memory, pids, cpu, cpuacct and the
// optional freezer hierarchy) or v2 (a delegated subtree), a cgroup per
// run (created, recycled on v1, destroyed), its CPU time, memory peak and
// OOM kills, emptying it, and the freezer a stateful run is kept frozen
// with. It must not know how processes get into a sandbox, what runs in
// them, or which backend asks.
package cgroup
