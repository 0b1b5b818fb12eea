package gvisor

import "github.com/codeexec/codeexec/internal/sandbox/host"

// Config configures the gVisor backend (New). The embedded
// host.Config means what it means for the native backend: RunDir, Slots,
// RootFS, Logger, InstanceDir/MaxInstances (shared with native instances,
// so the two never use the same cgroups or run directories), CgroupParent
// and CPUs. UIDBase is only used to clean up after a native predecessor
// that held the same instance number.
type Config struct {
	host.Config
	// Runsc is the runsc binary (default: "runsc" on PATH).
	Runsc string
	// Platform is runsc's --platform (default "ptrace": Debian's 2022
	// runsc hangs with kvm in nested VMs and has no systrap).
	Platform string
}
