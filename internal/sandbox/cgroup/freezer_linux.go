//go:build linux

package cgroup

import (
	"sync"

	"github.com/codeexec/codeexec/internal/sandbox"
)

// RunFreezer is a run's Freezer. The run calls end as soon as it kills or
// sees the end of its processes: from then on a Freeze (from a caller that
// has not heard yet) is refused, and a frozen cgroup is thawed, so that a
// kill is never left pending in a frozen cgroup (v1 delivers it only on
// thaw) and the run always comes to its end.
type RunFreezer struct {
	mu      sync.Mutex
	cg      Run
	touched bool // a freeze was asked at least once
	ended   bool
}

func (f *RunFreezer) Freeze() error { return f.set(true) }
func (f *RunFreezer) Thaw() error   { return f.set(false) }

func (f *RunFreezer) set(frozen bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return sandbox.ErrRunEnded
	}
	f.touched = f.touched || frozen
	return f.cg.SetFrozen(frozen)
}

// End refuses further freezes and thaws the cgroup. Called after the kill
// (not before): a killed task leaves a v1 freezer straight to its death.
func (f *RunFreezer) End() {
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
		_ = f.cg.SetFrozen(false)
	}
}

// StartFreezer hands spec.Started the run's freezer, when it asks for one
// and the cgroup can freeze.
func StartFreezer(spec sandbox.Spec, cg Run) *RunFreezer {
	if spec.Started == nil {
		return nil
	}
	if _, ok := cg.(None); ok {
		return nil
	}
	if c1, ok := cg.(*cg1Run); ok && (c1.tree == nil || !c1.tree.freezer) {
		return nil
	}
	f := &RunFreezer{cg: cg}
	spec.Started(f)
	return f
}
