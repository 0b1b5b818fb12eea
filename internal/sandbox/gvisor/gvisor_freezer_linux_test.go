//go:build linux

package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
)

// runCPU reads the CPU time the host accounts to the gVisor box's only
// run cgroup (its sentry, gofer and stubs), v1 or v2.
func runCPU(t *testing.T, g *GVisor) time.Duration {
	t.Helper()
	base := g.Describe().Cgroup.Path
	for _, pat := range []string{"/sys/fs/cgroup/cpuacct" + base + "/s*/cpuacct.usage", "/sys/fs/cgroup" + base + "/s*/cpu.stat"} {
		files, _ := filepath.Glob(pat)
		if len(files) != 1 {
			continue
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		s := strings.TrimSpace(string(b))
		if strings.HasSuffix(files[0], "cpu.stat") {
			for _, line := range strings.Split(s, "\n") {
				if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					return time.Duration(n) * time.Microsecond
				}
			}
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(n)
	}
	t.Fatalf("no single run cgroup under %s", base)
	return 0
}

// TestGVisorFreezer: a gVisor run paused through Spec.Started (runsc
// pause) uses no CPU, with a busy loop in it; resumed, the loop runs
// again; killed while paused, the run ends at once, and its freezer then
// answers ErrRunEnded.
func TestGVisorFreezer(t *testing.T) {
	g := gv(t)
	fzc := make(chan sandbox.Freezer, 1)
	spec := sandbox.Spec{Steps: sh(sandboxtest.SpinScript), Started: func(f sandbox.Freezer) { fzc <- f }, Env: sandboxtest.BaseEnv}
	spec.Limits = sandbox.Limits{WallTime: time.Minute, CPUTime: time.Minute, MemoryBytes: 256 << 20, Pids: 64}
	dir, release, err := g.NewWorkdir(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	spec.Workdir = dir
	out := sandboxtest.NewLineWriter()
	spec.Stdout, spec.Stderr = out, out
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ran struct {
		res sandbox.Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := g.Run(ctx, spec)
		done <- ran{res, err}
	}()
	var fz sandbox.Freezer
	select {
	case fz = <-fzc:
	case r := <-done:
		t.Fatalf("run ended without calling Started: %+v %v %q", r.res, r.err, out.String())
	}
	if line := <-out.First; line != "started" {
		t.Fatalf("first line %q", line)
	}
	if err := fz.Freeze(); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	// Measured over a second: the paused sandbox's tasks do not run.
	u0 := runCPU(t, g)
	time.Sleep(time.Second)
	if d := runCPU(t, g) - u0; d > 10*time.Millisecond {
		t.Fatalf("paused run used %v of CPU in 1 s", d)
	}
	if err := fz.Thaw(); err != nil {
		t.Fatalf("resume: %v", err)
	}
	u1 := runCPU(t, g)
	deadline := time.Now().Add(10 * time.Second)
	for runCPU(t, g)-u1 < 200*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("resumed loop used only %v of CPU in 10 s", runCPU(t, g)-u1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := fz.Freeze(); err != nil {
		t.Fatalf("pause again: %v", err)
	}
	start := time.Now()
	cancel()
	var r ran
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a run killed while paused did not end within 20 s")
	}
	if r.err != nil || r.res.Status != sandbox.StatusKilled {
		t.Fatalf("killed while paused: %+v %v", r.res, r.err)
	}
	t.Logf("killed while paused, ended in %v", time.Since(start))
	if err := fz.Freeze(); err != sandbox.ErrRunEnded {
		t.Fatalf("pause after the end: %v, want sandbox.ErrRunEnded", err)
	}
}
