package api

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/codeexec/codeexec/internal/storage"
)

// procWith waits for the host process whose command line holds marker.
func procWith(t *testing.T, marker string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, []byte(marker)) {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process with %q in its command line", marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupCPU returns a reader of the CPU time the cgroup of pid has used,
// as the host accounts it (cgroup v1 cpuacct.usage, v2 cpu.stat).
func cgroupCPU(t *testing.T, pid int) func() time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var file string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if strings.Contains(","+f[1]+",", ",cpuacct,") {
			file = filepath.Join("/sys/fs/cgroup/cpuacct", f[2], "cpuacct.usage")
			break
		}
		if f[0] == "0" {
			file = filepath.Join("/sys/fs/cgroup", f[2], "cpu.stat")
		}
	}
	if file == "" {
		t.Fatalf("no cpu accounting cgroup in %q", b)
	}
	t.Logf("the session's CPU as the host accounts it: %s", file)
	return func() time.Duration {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(file, "cpu.stat") {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					return time.Duration(n) * time.Microsecond
				}
			}
			t.Fatalf("no usage_usec in %s", file)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(n)
	}
}

// TestAttackStatefulBackgroundLoop: a stateful session leaves a CPU loop
// that ignores SIGXCPU and SIGTERM running after its call returned. The
// session is frozen between calls: the host accounts no CPU to it then;
// during the next call the loop runs again (frozen, not killed), and
// closing the session kills it although it is frozen.
func TestAttackStatefulBackgroundLoop(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	m := e.withRuntime(runtime.Config{})
	marker := "spin-" + storage.NewID()
	r := e.live("spin", map[string]any{"lang": "bash",
		"code": `bash -c 'trap "" XCPU TERM; while :; do :; done' ` + marker + ` & echo started`})
	if r.Stdout != "started\n" || r.Status != "ok" {
		t.Fatalf("call 1: %+v", r)
	}
	pid := procWith(t, marker)
	usage := cgroupCPU(t, pid)

	idle := func(when string) {
		u := usage()
		time.Sleep(1500 * time.Millisecond) // the measurement window
		if d := usage() - u; d > 10*time.Millisecond {
			t.Fatalf("%s: the session used %v of CPU in 1.5 s between calls", when, d)
		}
	}
	idle("after call 1")
	// During a call that sleeps, the loop runs (and is still there).
	u := usage()
	r = e.live("spin", map[string]any{"lang": "py", "code": "import os, time\ntime.sleep(2)\n" +
		"def has(p):\n    try:\n        return b'" + marker + "' in open('/proc/%s/cmdline' % p, 'rb').read()\n    except OSError:\n        return False\n" +
		"print(sum(has(p) for p in os.listdir('/proc') if p.isdigit()))"})
	d := usage() - u
	t.Logf("during a 2 s call the loop used %v of CPU", d)
	if r.Stdout != "1\n" || r.RuntimeStatus != "reused" {
		t.Fatalf("call 2 (the loop alive, frozen not killed): %+v", r)
	}
	if d < 300*time.Millisecond {
		t.Fatalf("the loop used %v of CPU during a 2 s call: the session was not thawed", d)
	}
	idle("after call 2")
	// Closed while frozen: the loop dies with its session.
	m.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the frozen loop outlived its closed session by 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.assertClean()
}
