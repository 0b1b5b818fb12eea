package sandbox

// GVisorConfig configures the gVisor backend (NewGVisor). The embedded
// LinuxConfig means what it means for the native backend: RunDir, Slots,
// RootFS, Logger, InstanceDir/MaxInstances (shared with native instances,
// so the two never use the same cgroups or run directories), CgroupParent
// and CPUs. UIDBase is only used to clean up after a native predecessor
// that held the same instance number.
type GVisorConfig struct {
	LinuxConfig
	// Runsc is the runsc binary (default: "runsc" on PATH).
	Runsc string
	// Platform is runsc's --platform (default "ptrace": Debian's 2022
	// runsc hangs with kvm in nested VMs and has no systrap).
	Platform string
}
