package sandbox

import "log/slog"

// LinuxConfig configures the Linux namespace backend (NewLinux).
type LinuxConfig struct {
	// RunDir is this server's state root (e.g. /run/codeexec). Each instance
	// uses RunDir/i<K>/ for its workdirs. Every ancestor of RunDir must be
	// searchable by others (o+x): the sandbox's init, an unprivileged host
	// uid, walks to the workdir to bind-mount it.
	RunDir string
	// Slots is the number of concurrent runs (default: 2, at most MaxSlots).
	Slots int
	// RootFS is a tree whose usr/, etc/ (allowlisted entries) and
	// bin/lib/sbin links form the sandbox root; "" uses the host's own.
	RootFS string
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// InstanceDir holds the host-wide instance lock files K.lock; the lock
	// held decides this instance's uid range and cgroup names. Default
	// /run/codeexec-instances. All instances on a host must share it.
	InstanceDir string
	// MaxInstances bounds K (default and maximum 16).
	MaxInstances int
	// UIDBase is the first host uid/gid used for sandboxes (default
	// 0x70000000, a range systemd leaves unused and /etc/subuid rarely
	// reaches). Slot s of instance K maps inside [0,65536) to
	// UIDBase + (K*MaxSlots+s)*65536.
	UIDBase uint32
	// CgroupParent is the cgroup (relative to each hierarchy's root) under
	// which the instance's cgroups live: CgroupParent/K/s<slot>. Default
	// "codeexec".
	CgroupParent string
	// CPUs is the CPU bandwidth of one run, in CPUs (default 1).
	CPUs float64
	// Warm configures the warm Python pool; its slots come on top of Slots.
	Warm WarmConfig
	// AllowDegraded runs without cgroups when the host has none usable
	// (limits then come from rlimits: weaker, and Describe says so); by
	// default NewLinux refuses to start.
	AllowDegraded bool
}

// MaxSlots is the largest LinuxConfig.Slots; it also spaces the uid ranges
// of instances.
const MaxSlots = 64
