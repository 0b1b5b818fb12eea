package host

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// Config is what a backend holding a Host is given: the native backend
// (native.New) and gVisor (gvisor.Config embeds it).
type Config struct {
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
	// Etc are the /etc entries (globs) the languages' toolchains read,
	// shown besides policy.EtcAllowlist (main passes lang.Etc()).
	Etc []string
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
	// AllowDegraded runs without cgroups when the host has none usable
	// (limits then come from rlimits: weaker, and Describe says so); by
	// default the native backend refuses to start.
	AllowDegraded bool
}

// MaxSlots is the largest Config.Slots; it also spaces the uid ranges
// of instances.
const MaxSlots = 64

// IDRange is how many uids and gids are mapped into one sandbox.
const IDRange = 65536

// Normalize fills Config's defaults and checks it; both backends
// share it.
func (cfg *Config) Normalize() error {
	if cfg.RunDir == "" || !filepath.IsAbs(cfg.RunDir) {
		return fmt.Errorf("sandbox: RunDir must be an absolute path, got %q", cfg.RunDir)
	}
	cfg.RunDir = filepath.Clean(cfg.RunDir)
	if cfg.Slots <= 0 {
		cfg.Slots = 2
	}
	if cfg.Slots > MaxSlots {
		return fmt.Errorf("sandbox: at most %d slots", MaxSlots)
	}
	if cfg.InstanceDir == "" {
		cfg.InstanceDir = "/run/codeexec-instances"
	}
	if cfg.MaxInstances <= 0 || cfg.MaxInstances > 16 {
		cfg.MaxInstances = 16
	}
	if cfg.UIDBase == 0 {
		cfg.UIDBase = 0x70000000
	}
	if uint64(cfg.UIDBase)+uint64(cfg.MaxInstances*MaxSlots*IDRange) > 1<<32-2 {
		return errors.New("sandbox: UIDBase too high for the uid ranges")
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "codeexec"
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.RootFS != "" {
		if fi, err := os.Stat(filepath.Join(cfg.RootFS, "usr")); err != nil || !fi.IsDir() {
			return fmt.Errorf("sandbox: RootFS %s has no usr directory", cfg.RootFS)
		}
	}
	return nil
}
