//go:build linux

package sandbox

import "sync"

// runFreezer is a run's Freezer. The run calls end as soon as it kills or
// sees the end of its processes: from then on a Freeze (from a caller that
// has not heard yet) is refused, and a frozen cgroup is thawed, so that a
// kill is never left pending in a frozen cgroup (v1 delivers it only on
// thaw) and the run always comes to its end.
type runFreezer struct {
	mu      sync.Mutex
	cg      runCgroup
	touched bool // a freeze was asked at least once
	ended   bool
}

func (f *runFreezer) Freeze() error { return f.set(true) }
func (f *runFreezer) Thaw() error   { return f.set(false) }

func (f *runFreezer) set(frozen bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return ErrRunEnded
	}
	f.touched = f.touched || frozen
	return f.cg.setFrozen(frozen)
}

// end refuses further freezes and thaws the cgroup. Called after the kill
// (not before): a killed task leaves a v1 freezer straight to its death.
func (f *runFreezer) end() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return
	}
	f.ended = true
	if f.touched {
		_ = f.cg.setFrozen(false)
	}
}

// startFreezer hands spec.Started the run's freezer, when it asks for one
// and the cgroup can freeze.
func startFreezer(spec Spec, cg runCgroup) *runFreezer {
	if spec.Started == nil {
		return nil
	}
	if _, ok := cg.(noCgroups); ok {
		return nil
	}
	if c1, ok := cg.(*cg1Run); ok && (c1.tree == nil || !c1.tree.freezer) {
		return nil
	}
	f := &runFreezer{cg: cg}
	spec.Started(f)
	return f
}
