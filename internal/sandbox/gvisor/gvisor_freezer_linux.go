//go:build linux

package gvisor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
)

// runscFreezer is a gVisor run's Freezer: `runsc pause` stops every task
// of the sandbox in its sentry (and returns once they have stopped),
// `runsc resume` lets them go on. The host-side processes stay killable
// while paused (the watchdog kills them with SIGKILL from the host), so,
// unlike the cgroup freezer, nothing needs thawing for a run to end.
type runscFreezer struct {
	mu    sync.Mutex
	runsc string
	root  string // runsc's --root of the run
	id    string // the container of the current step; "" before the first
	ended bool
}

func (f *runscFreezer) Freeze() error { return f.do("pause") }
func (f *runscFreezer) Thaw() error   { return f.do("resume") }

func (f *runscFreezer) do(verb string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return sandbox.ErrRunEnded
	}
	if f.id == "" {
		return errors.New("sandbox: no step has started yet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.runsc, "--root", f.root, verb, f.id)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("runsc %s: %v: %s", verb, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// step records the container the next Freeze or Thaw applies to.
func (f *runscFreezer) step(id string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.id = id
	f.mu.Unlock()
}

// end refuses further pauses and resumes: the run is being killed or is over.
func (f *runscFreezer) end() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.ended = true
	f.mu.Unlock()
}

// startRunscFreezer hands spec.Started the run's freezer, when it asks for one.
func startRunscFreezer(spec sandbox.Spec, runsc, root string) *runscFreezer {
	if spec.Started == nil {
		return nil
	}
	f := &runscFreezer{runsc: runsc, root: root}
	spec.Started(f)
	return f
}
