//go:build linux

package gvisor

import (
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
	sandboxtest.CheckFreezer(t, g, 10*time.Millisecond, func(sandbox.Freezer) time.Duration { return runCPU(t, g) })
}
