//go:build linux

package sandbox

import (
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestZZTiming(t *testing.T) {
	s := sb(t)
	var a, b, c, d []time.Duration
	for i := 0; i < 40; i++ {
		t0 := time.Now()
		run(t, s, Spec{Steps: []Step{{Name: "run", Argv: []string{"/bin/true"}}}})
		a = append(a, time.Since(t0))
		t0 = time.Now()
		run(t, s, Spec{Steps: []Step{{Name: "run", Argv: []string{"/usr/bin/python3", "-c", "print(1)"}}}})
		b = append(b, time.Since(t0))
		t0 = time.Now()
		exec.Command("/bin/true").Run()
		c = append(c, time.Since(t0))
		t0 = time.Now()
		exec.Command("/usr/bin/python3", "-c", "print(1)").Run()
		d = append(d, time.Since(t0))
	}
	med := func(x []time.Duration) time.Duration { slices.Sort(x); return x[len(x)/2] }
	t.Logf("sandbox true %v python %v | bare true %v python %v", med(a), med(b), med(c), med(d))
}
