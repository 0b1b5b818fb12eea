//go:build linux

package cgroup

// What the sandbox tests of the backends look at inside the trees they
// hold: nothing here is used by a server.

// Kept returns the cgroup a v1 tree keeps for slot's next run (nil: none)
// and whether t recycles cgroups at all (v1 only).
func Kept(t Tree, slot int) (Run, bool) {
	v1, ok := t.(*cg1Tree)
	if !ok {
		return nil, false
	}
	v1.mu.Lock()
	defer v1.mu.Unlock()
	if r := v1.idle[slot]; r != nil {
		return r, true
	}
	return nil, true
}

// MemoryLimit is the memory limit r was last made or reused with.
func MemoryLimit(r Run) int64 {
	if v1, ok := r.(*cg1Run); ok {
		return v1.lim.Memory
	}
	return -1
}

// SamplePeaks has a v2 tree measure peaks by sampling memory.current, as
// on kernels before memory.peak; false on v1.
func SamplePeaks(t Tree) bool {
	v2, ok := t.(*cg2Tree)
	if ok {
		v2.samplePeak = true
	}
	return ok
}

// FrozenCgroup is the cgroup a run's Freezer freezes.
func FrozenCgroup(f *RunFreezer) Run { return f.cg }
