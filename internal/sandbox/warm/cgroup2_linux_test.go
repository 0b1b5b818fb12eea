//go:build linux

package warm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/native"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/containerd/cgroups/v3"
)

// The cgroup v2 tests. This development host is cgroup v1, so they skip
// here and run on a real v2 kernel in test/vm (TestCgroupV2VM), which
// also runs the version-agnostic limit tests there.

func requireV2(t *testing.T) {
	t.Helper()
	if cgroups.Mode() != cgroups.Unified {
		t.Skip("not a cgroup v2 host: these tests run on a v2 kernel in test/vm (TestCgroupV2VM)")
	}
}

// runCgroupSeen is the cgroup a run's code reported as its own, with the
// files the host read from it while the code waited.
type runCgroupSeen struct {
	path  string // relative to /sys/fs/cgroup
	files map[string]string
	procs []string // comm of each process in it
}

// cgroupOfRun runs spec, whose code first prints "<its /proc/self/ns/pid
// link> <its pid> <its /proc/self/cgroup line>" and then waits for
// /mnt/data/go; meanwhile it finds that process on the host, reads its
// cgroup's limits from there (the code itself sees "0::/": its own cgroup
// namespace), then lets the code finish.
func cgroupOfRun(t *testing.T, s *Pool, spec sandbox.Spec) (runCgroupSeen, runOut) {
	t.Helper()
	line, finish := firstLineOfRun(t, s, spec)
	var seen runCgroupSeen
	func() {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "0::/" {
			t.Errorf("the run's pid namespace, pid and /proc/self/cgroup: %q, want its own cgroup namespace (0::/)", line)
			return
		}
		inner, _ := strconv.Atoi(f[1])
		host := hostCgroupLines(t, hostPidOf(t, f[0], inner))
		p, ok := strings.CutPrefix(strings.TrimSpace(host), "0::")
		if !ok {
			t.Errorf("/proc/PID/cgroup of the run from the host: %q, want a single cgroup v2 line", host)
			return
		}
		seen.path = p
		seen.files = map[string]string{}
		for _, f := range []string{"memory.max", "memory.swap.max", "pids.max", "cpu.max"} {
			b, err := os.ReadFile(filepath.Join(cgroup.Root, p, f))
			if err != nil {
				t.Errorf("cgroup %s: %v", p, err)
			}
			seen.files[f] = strings.TrimSpace(string(b))
		}
		b, _ := os.ReadFile(filepath.Join(cgroup.Root, p, "cgroup.procs"))
		for _, pid := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			seen.procs = append(seen.procs, strings.TrimSpace(string(comm)))
		}
	}()
	return seen, finish()
}

var runCgroupRE = regexp.MustCompile(`^/codeexec/(\d+)/s(\d+)$`)

// cgroupSlot parses a run cgroup's path and checks it is the instance's.
func cgroupSlot(t *testing.T, s *Pool, path string) int {
	t.Helper()
	m := runCgroupRE.FindStringSubmatch(path)
	if m == nil || m[1] != strconv.Itoa(s.HostResources().Instance) {
		t.Fatalf("run cgroup %q, want /codeexec/%d/s<slot>", path, s.HostResources().Instance)
	}
	n, _ := strconv.Atoi(m[2])
	return n
}

func checkLimits(t *testing.T, seen runCgroupSeen, mem int64, pids int) {
	t.Helper()
	want := map[string]string{"memory.max": strconv.FormatInt(mem, 10), "memory.swap.max": "0", "pids.max": strconv.Itoa(pids)}
	for f, v := range want {
		if seen.files[f] != v {
			t.Errorf("%s of the run's cgroup %s = %q, want %q", f, seen.path, seen.files[f], v)
		}
	}
	if q := strings.Fields(seen.files["cpu.max"]); len(q) != 2 || q[0] == "max" {
		t.Errorf("cpu.max of the run's cgroup = %q, want a quota", seen.files["cpu.max"])
	}
}

// cgroupGone waits until the run's cgroup is removed.
func cgroupGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(cgroup.Root, path))
		if os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cgroup %s still there after the run: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// selfLine prints the shell's pid namespace, pid and cgroup (cgroupOfRun).
const selfLine = `echo "$(readlink /proc/$$/ns/pid) $$ $(cat /proc/self/cgroup)"; `

const waitForGo = sandboxtest.WaitForGo

func TestCgroupV2ColdRun(t *testing.T) {
	requireV2(t)
	s := sb(t)
	seen, r := cgroupOfRun(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 200 << 20, Pids: 50, WallTime: time.Minute},
		Steps: sh(selfLine + waitForGo)})
	wantStatus(t, r, sandbox.StatusOK)
	t.Logf("cold run: /proc/self/cgroup 0::%s, limits %v, processes %v", seen.path, seen.files, seen.procs)
	if slot := cgroupSlot(t, s, seen.path); slot >= s.HostResources().Cfg.Slots {
		t.Errorf("cold run in cgroup s%d, beyond the %d run slots", slot, s.HostResources().Cfg.Slots)
	}
	checkLimits(t, seen, 200<<20, 50+native.InitThreads)
	if r.CPUTime <= 0 || r.MemoryPeak <= 0 {
		t.Errorf("no accounting: %+v", r.Result)
	}
	cgroupGone(t, seen.path)
}

func TestCgroupV2ColdMemoryBomb(t *testing.T) {
	requireV2(t)
	s := sb(t)
	// Generous time limits: page faults are slow under the VM's emulation.
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 256 << 20, CPUTime: time.Minute, WallTime: 2 * time.Minute}, Steps: py("x = bytearray(2 << 30)")})
	t.Logf("cold bytearray(2 << 30) under 256 MiB: status %s, exit %d %s, peak %d, after %v", r.Status, r.ExitCode, r.Signal, r.MemoryPeak, r.WallTime)
	wantStatus(t, r, sandbox.StatusMemory)
	if r.Signal != "SIGKILL" || r.MemoryPeak < 200<<20 || r.MemoryPeak > 256<<20 {
		t.Fatalf("signal %q peak %d", r.Signal, r.MemoryPeak)
	}
}

func TestCgroupV2ColdCPUTime(t *testing.T) {
	requireV2(t)
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: py("import time\nwhile time.process_time() < 0.3: pass")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.CPUTime < 300*time.Millisecond {
		t.Fatalf("cpu time %v for a 0.3 s spin", r.CPUTime)
	}
}

// TestCgroupV2ColdPids: forking stops at the run's pids.max.
func TestCgroupV2ColdPids(t *testing.T) {
	requireV2(t)
	s := sb(t)
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{Pids: 32, WallTime: 2 * time.Minute}, Steps: py(sandboxtest.ForkLoop)})
	wantStatus(t, r, sandbox.StatusOK)
	f := strings.Fields(r.Stdout)
	if n, _ := strconv.Atoi(f[0]); len(f) != 2 || f[1] != "EAGAIN" || n < 10 || n > 32+native.InitThreads {
		t.Fatalf("fork loop under pids 32: %q", r.Stdout)
	}
}

// TestCgroupV2SampledPeak runs the fallback of kernels without
// memory.peak (< 5.19) on this one: the peak is the highest
// memory.current the CPU poll saw.
func TestCgroupV2SampledPeak(t *testing.T) {
	requireV2(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	s, err := newPool(host.Config{RunDir: testRunDir + "-sampled", Slots: 1}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		s.Close()
		os.RemoveAll(testRunDir + "-sampled")
	}()
	cgroup.SamplePeaks(s.HostResources().CG)
	if d := s.Describe().Cgroup; !strings.Contains(d.MemoryPeak, "memory.current sampled") || !slices.Contains(d.Controllers, "memory") || !slices.Contains(d.Controllers, "pids") {
		t.Errorf("describe: %+v", d)
	}
	// 64 MiB held for a few polls.
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 256 << 20, CPUTime: time.Minute, WallTime: 2 * time.Minute},
		Steps: py("import time\nx = bytearray(64 << 20)\ntime.sleep(0.5)")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.MemoryPeak < 64<<20 || r.MemoryPeak > 256<<20 {
		t.Fatalf("sampled peak %d, want 64 MiB and more", r.MemoryPeak)
	}
}

// The warm checks: a warm child must be in a cgroup of its own, with the
// run's limits, before the first line of the code runs.

const warmWaitForGo = "import os\nprint(os.readlink('/proc/self/ns/pid'), os.getpid(), open('/proc/self/cgroup').read().strip(), flush=True)\n" +
	"import os, time\nwhile not os.path.exists('/mnt/data/go'): time.sleep(0.02)\nprint('done')\n"

func TestCgroupV2Warm(t *testing.T) {
	requireV2(t)
	s := wb(t)
	sp := warmSpec(warmWaitForGo)
	seen, r := cgroupOfRun(t, s, sp)
	wantStatus(t, r, sandbox.StatusOK)
	t.Logf("warm run: /proc/self/cgroup 0::%s, limits %v, processes %v", seen.path, seen.files, seen.procs)
	slot := cgroupSlot(t, s, seen.path)
	if slot < 1000 {
		t.Fatalf("run served cold (cgroup s%d), not by the warm pool", slot)
	}
	if slot%1000 == 0 {
		t.Fatalf("warm run in its template's cgroup s%d", slot)
	}
	checkLimits(t, seen, sp.Limits.MemoryBytes, sp.Limits.Pids)
	// The warm child's two processes: pid 1 (the reaper) and the code.
	if procs := slices.Sorted(slices.Values(seen.procs)); !slices.Equal(procs, []string{"python3", "reaper"}) {
		t.Errorf("processes in the warm run's cgroup: %v, want the warm child's reaper and python3 alone", seen.procs)
	}
	if r.CPUTime <= 0 || r.MemoryPeak <= 0 {
		t.Errorf("no accounting: %+v", r.Result)
	}
	// (The cgroup's name is taken again by the next spare at once: no
	// check that it is gone.)

	sp = warmSpec("x = bytearray(2 << 30)")
	sp.Limits.CPUTime, sp.Limits.WallTime = time.Minute, 2*time.Minute
	r = run(t, s, sp)
	t.Logf("warm bytearray(2 << 30) under 256 MiB: status %s, exit %d %s, peak %d", r.Status, r.ExitCode, r.Signal, r.MemoryPeak)
	wantStatus(t, r, sandbox.StatusMemory)
	if r.MemoryPeak < 200<<20 || r.MemoryPeak > 256<<20 {
		t.Errorf("memory peak %d", r.MemoryPeak)
	}

	// The child's process_time counts from its fork, the cgroup's from
	// the move: a little less.
	r = run(t, s, warmSpec("import time\nwhile time.process_time() < 0.3: pass"))
	wantStatus(t, r, sandbox.StatusOK)
	if r.CPUTime < 250*time.Millisecond {
		t.Errorf("cpu time %v for a 0.3 s spin", r.CPUTime)
	}

	// A fork bomb meets the run's pids.max, not the template's.
	r = run(t, s, warmSpec(sandboxtest.ForkLoop))
	wantStatus(t, r, sandbox.StatusOK)
	f := strings.Fields(r.Stdout)
	if n, _ := strconv.Atoi(f[0]); len(f) != 2 || f[1] != "EAGAIN" || n < 32 || n >= 64 {
		t.Fatalf("fork loop under pids 64: %q", r.Stdout)
	}
	if p := warmSlotProcesses(t, s); len(p) > 0 {
		t.Fatalf("processes left: %v", p)
	}
	// The templates survived all of it: the next run is warm again.
	seen, r = cgroupOfRun(t, s, warmSpec(warmWaitForGo))
	wantStatus(t, r, sandbox.StatusOK)
	if slot := cgroupSlot(t, s, seen.path); slot < 1000 || slot%1000 == 0 {
		t.Fatalf("after the attacks: run in cgroup s%d, not a warm child's own", slot)
	}
}

// TestCgroupV2KilledServer kills -9 a process serving a cold and a warm
// run, then checks that the kernel left nothing running and that the next
// sandbox of the same instance removes every cgroup the dead one left.
func TestCgroupV2KilledServer(t *testing.T) {
	requireV2(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runDir := testRunDir + "-killed"
	defer os.RemoveAll(runDir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCgroupV2ServerHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "CODEEXEC_TEST_HELPER_RUNDIR="+runDir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	k := -1
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "SERVING "); ok {
			k, _ = strconv.Atoi(n)
			break
		}
	}
	if k < 0 {
		t.Fatal("the helper server never served its two runs")
	}
	base := filepath.Join(cgroup.Root, "codeexec", strconv.Itoa(k))
	before := cgroupProcs(base)
	t.Logf("before kill -9: processes in %s: %d", base, len(before))
	if len(before) < 2 {
		t.Fatalf("expected the two runs' processes under %s, got %v", base, before)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for left := cgroupProcs(base); len(left) > 0; left = cgroupProcs(base) {
		if time.Now().After(deadline) {
			t.Fatalf("processes still in %s 10 s after the server's kill -9: %v", base, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	second, err := newPool(host.Config{RunDir: runDir, Slots: 1}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if second.HostResources().Instance != k {
		second.Close()
		t.Fatalf("successor got K=%d, want %d", second.HostResources().Instance, k)
	}
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("cgroup %s/%s of the dead server left after restart", base, e.Name())
		}
	}
	r := run(t, second, sandbox.Spec{Steps: sh("echo fresh")})
	wantStatus(t, r, sandbox.StatusOK)
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(base); !os.IsNotExist(err) {
		t.Fatalf("%s still there after Close: %v", base, err)
	}
}

// cgroupProcs lists every pid in the cgroups under dir.
func cgroupProcs(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "cgroup.procs" {
			b, _ := os.ReadFile(p)
			out = append(out, strings.Fields(string(b))...)
		}
		return nil
	})
	return out
}

// TestCgroupV2ServerHelper is the server TestCgroupV2KilledServer kills:
// a sandbox with a warm pool serving one cold and one warm run that never
// end. It does nothing unless started by that test.
func TestCgroupV2ServerHelper(t *testing.T) {
	runDir := os.Getenv("CODEEXEC_TEST_HELPER_RUNDIR")
	if runDir == "" {
		t.Skip("helper of TestCgroupV2KilledServer")
	}
	s, err := newPool(host.Config{RunDir: runDir, Slots: 1},
		Config{Python: 1, Env: warmEnv, Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond, Limits: sandbox.Limits{MemoryBytes: 256 << 20, Pids: 64}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.WaitWarm(ctx); err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 2)
	for _, spec := range []sandbox.Spec{
		{Steps: sh("echo started; exec sleep 1000"), Env: sandboxtest.BaseEnv},
		warmSpec("print('started', flush=True)\nimport time\ntime.sleep(1000)"),
	} {
		dir, _, err := s.NewWorkdir(16 << 20)
		if err != nil {
			t.Fatal(err)
		}
		spec.Workdir = dir
		spec.Limits.WallTime = 20 * time.Minute
		w := sandboxtest.NewLineWriter()
		spec.Stdout, spec.Stderr = w, w
		go func() { _, _ = s.Run(context.Background(), spec) }()
		go func() { started <- <-w.First }()
	}
	for i := 0; i < 2; i++ {
		select {
		case l := <-started:
			if l != "started" {
				t.Fatalf("run printed %q", l)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("runs did not start")
		}
	}
	fmt.Printf("SERVING %d\n", s.HostResources().Instance)
	time.Sleep(time.Hour) // until killed
}

// TestCgroupV2RefusesUndelegated: a parent cgroup that holds processes
// cannot hand controllers to sub-cgroups (cgroup v2's no-internal-process
// rule), so runs there would be unlimited; the sandbox refuses to start
// and says how to fix it.
func TestCgroupV2RefusesUndelegated(t *testing.T) {
	requireV2(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	parent := filepath.Join(cgroup.Root, "codeexec-undelegated")
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("/bin/sleep", "1000")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
		for _, err := range cgroup.RemoveTree(parent, cgroup.EmptyProcs) {
			t.Error(err)
		}
	}()
	if err := os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	runDir := testRunDir + "-undelegated"
	defer os.RemoveAll(runDir)
	s, err := newPool(host.Config{RunDir: runDir, Slots: 1, CgroupParent: "codeexec-undelegated/codeexec"}, Config{})
	if err == nil {
		s.Close()
		t.Fatal("native.New accepted a cgroup parent that cannot delegate memory and pids")
	}
	t.Log(err)
	for _, want := range []string{"cannot enable +memory +pids +cpu", parent, "move them into a leaf", "entrypoint"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// hostPidOf finds, on the host, the process whose pid namespace is ns (a
// /proc/PID/ns/pid link's target) and whose pid in it is inner.
func hostPidOf(t *testing.T, ns string, inner int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err != nil || l != ns {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 && f[len(f)-1] == strconv.Itoa(inner) {
					pid, _ := strconv.Atoi(e.Name())
					return pid
				}
			}
		}
	}
	t.Fatalf("no host process with pid %d in %s", inner, ns)
	return 0
}

// hostCgroupLines is /proc/PID/cgroup as the host sees it.
func hostCgroupLines(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
