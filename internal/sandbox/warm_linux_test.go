//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	warmBox     *Linux
	warmBoxErr  error
	warmBoxOnce sync.Once
)

var warmEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", "MPLBACKEND=Agg", "PYTHONPATH=/mnt/data"}

// wb returns a sandbox with one warm template whose pool is ready.
func wb(t *testing.T) *Linux {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	warmBoxOnce.Do(func() {
		warmBox, warmBoxErr = NewLinux(LinuxConfig{RunDir: testRunDir + "-warm", Slots: 2, InstanceDir: testRunDir + "-warm-inst",
			Logger: testLogger(), Warm: WarmConfig{Python: 1, Env: warmEnv, Limits: Limits{MemoryBytes: 256 << 20, Pids: 64}}})
		if warmBoxErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		warmBoxErr = warmBox.WaitWarm(ctx)
	})
	if warmBoxErr != nil {
		t.Fatal(warmBoxErr)
	}
	return warmBox
}

// warmSpec is what the engine sends for Python code.
func warmSpec(code string, args ...string) Spec {
	return Spec{
		Steps:  []Step{{Name: "run", Argv: append([]string{"/usr/bin/python3", "-u", "/tmp/code/main.py"}, args...)}},
		Files:  []File{{Path: "/tmp/code/main.py", Data: []byte(code)}},
		Env:    warmEnv,
		Limits: Limits{MemoryBytes: 256 << 20, Pids: 64, WallTime: 20 * time.Second, FileBytes: 256 << 20, DiskBytes: 128 << 20},
	}
}

func TestWarmBasic(t *testing.T) {
	s := wb(t)
	r := run(t, s, warmSpec("import sys, os\nprint('hi', sys.argv[1:], os.getcwd(), os.getuid())\nopen('out.txt','w').write('x')\n", "a", "b"))
	wantStatus(t, r, StatusOK)
	if r.Stdout != "hi ['a', 'b'] /mnt/data 1000\n" {
		t.Fatalf("stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	if b, err := os.ReadFile(r.Workdir + "/out.txt"); err != nil || string(b) != "x" {
		t.Fatalf("output file: %q %v", b, err)
	}
	t.Logf("wall %v cpu %v mem %d", r.WallTime, r.CPUTime, r.MemoryPeak)
	if !strings.Contains(fmt.Sprint(s.Describe()["warm"]), "ready:1") {
		t.Errorf("describe: %v", s.Describe()["warm"])
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return nil
}

// TestWarmIsolation checks, from inside a warm child, what a cold run
// guarantees: identity, capabilities, filters, namespaces, mounts, fds.
func TestWarmIsolation(t *testing.T) {
	s := wb(t)
	code := `import os, socket, ctypes, errno
st = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print("ids", os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"):
    print(k, st.get(k, "").strip())
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("host", socket.gethostname())
print("tmp", sorted(os.listdir("/tmp")))
print("fds", sorted(int(f) for f in os.listdir("/proc/self/fd")))
print("env", sorted(os.environ))
print("masked", [n for n in ("kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "kallsyms") if os.path.exists("/proc/" + n) and open("/proc/" + n, "rb").read(1)])
for p in ("/x", "/usr/x", "/proc/sys/kernel/hostname"):
    try:
        open(p, "w").write("x"); print("WROTE", p)
    except OSError as e:
        pass
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM); print("INET")
except OSError as e:
    print("inet", errno.errorcode[e.errno])
libc = ctypes.CDLL(None, use_errno=True)
for name, args in (("unshare", (0x10000000,)), ("mount", (b"none", b"/tmp", b"tmpfs", 0, None)), ("ptrace", (16, 1, None, None))):
    r = getattr(libc, name)(*args)
    print(name, "ok" if r == 0 else errno.errorcode[ctypes.get_errno()])
mi = open("/proc/self/mountinfo").read()
print("zygote", ".zygote" in mi or os.path.exists("/tmp/.zygote"))
`
	r := run(t, s, warmSpec(code))
	wantStatus(t, r, StatusOK)
	want := []string{
		"ids 1000 1000 1000 []", "CapInh 0000000000000000", "CapPrm 0000000000000000", "CapEff 0000000000000000",
		"CapBnd 0000000000000000", "CapAmb 0000000000000000", "NoNewPrivs 1", "Seccomp 2", "Seccomp_filters 2",
		"pids [1]", "host sandbox", "tmp ['code']", "fds [0, 1, 2, 3]",
		"env ['HOME', 'LANG', 'MPLBACKEND', 'PATH', 'PYTHONPATH']", "masked []", "inet EAFNOSUPPORT",
		"unshare EPERM", "mount EPERM", "ptrace EPERM", "zygote False",
	}
	for _, w := range want {
		if !strings.Contains(r.Stdout, w+"\n") {
			t.Errorf("missing %q in\n%s", w, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "WROTE") || strings.Contains(r.Stdout, "INET") {
		t.Errorf("wrote or connected:\n%s", r.Stdout)
	}
}

// TestWarmNothingCarriesOver runs twice: nothing of the first run (files in
// /tmp, processes, random state, modules, globals) reaches the second.
func TestWarmNothingCarriesOver(t *testing.T) {
	s := wb(t)
	first := `import os, subprocess, sys, numpy, random
open("/tmp/secret", "w").write("x")
os.makedirs("/dev/shm/x", exist_ok=True)
subprocess.Popen(["sleep", "100"], start_new_session=True)
sys.modules["planted"] = 1
import builtins; builtins.planted = 1
print(numpy.random.randint(1 << 30), random.randint(0, 1 << 30))
`
	second := `import os, sys, numpy, random, builtins
print(os.path.exists("/tmp/secret"), os.listdir("/dev/shm"), "planted" in sys.modules, hasattr(builtins, "planted"))
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print(numpy.random.randint(1 << 30), random.randint(0, 1 << 30))
`
	r1 := run(t, s, warmSpec(first))
	wantStatus(t, r1, StatusOK)
	r2 := run(t, s, warmSpec(second))
	wantStatus(t, r2, StatusOK)
	lines := strings.Split(r2.Stdout, "\n")
	if lines[0] != "False [] False False" || lines[1] != "[1]" {
		t.Fatalf("carried over: %q", r2.Stdout)
	}
	if strings.TrimSpace(r1.Stdout) == lines[2] {
		t.Fatalf("same random numbers in two runs: %q", lines[2])
	}
	if p := warmSlotProcesses(t, s); len(p) > 0 {
		t.Fatalf("processes left at the execution uid: %v", p)
	}
}

// warmSlotProcesses lists host processes at a warm slot's code uid.
func warmSlotProcesses(t *testing.T, s *Linux) []string {
	t.Helper()
	var out []string
	for i := 0; i < s.cfg.Warm.Python; i++ {
		uid := s.hostID(s.cfg.Slots+i) + sandboxUID
		deadline := time.Now().Add(2 * time.Second)
		for {
			out = processesOfUID(uid)
			if len(out) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

func processesOfUID(uid uint32) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == fmt.Sprint(uid) {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

func TestWarmStatuses(t *testing.T) {
	s := wb(t)
	r := run(t, s, warmSpec("import sys\nsys.exit(3)"))
	if r.Status != StatusError || r.ExitCode != 3 || r.FailedStep != "run" {
		t.Fatalf("exit 3: %+v", r.Result)
	}
	r = run(t, s, warmSpec("x = 1\nraise ValueError('boom')"))
	if r.Status != StatusError || r.ExitCode != 1 || !strings.HasPrefix(r.Stderr, "Traceback (most recent call last):\n  File \"/tmp/code/main.py\", line 2, in <module>\n") || !strings.HasSuffix(r.Stderr, "ValueError: boom\n") {
		t.Fatalf("exception: %+v %q", r.Result, r.Stderr)
	}
	r = run(t, s, warmSpec("print(("))
	if r.Status != StatusError || !strings.Contains(r.Stderr, "SyntaxError") || !strings.Contains(r.Stderr, "/tmp/code/main.py") {
		t.Fatalf("syntax: %+v %q", r.Result, r.Stderr)
	}
	sp := warmSpec("import sys\nprint(sys.stdin.read().upper())")
	sp.Steps[0].Stdin = []byte("hello")
	r = run(t, s, sp)
	if r.Stdout != "HELLO\n" {
		t.Fatalf("stdin: %q", r.Stdout)
	}
	sp = warmSpec("while True: pass")
	sp.Limits.CPUTime = time.Second
	r = run(t, s, sp)
	wantStatus(t, r, StatusTimeout)
	sp = warmSpec("import time\ntime.sleep(30)")
	sp.Limits.WallTime = 500 * time.Millisecond
	r = run(t, s, sp)
	wantStatus(t, r, StatusTimeout)
	r = run(t, s, warmSpec("x = []\nwhile True:\n    x.append(bytearray(16 << 20))"))
	wantStatus(t, r, StatusMemory)
	if r.MemoryPeak < 200<<20 || r.MemoryPeak > 300<<20 {
		t.Errorf("memory peak %d", r.MemoryPeak)
	}
	sp = warmSpec("import sys\nwhile True: sys.stdout.write('A' * 65536)")
	sp.Limits.OutputBytes = 1 << 20
	r = run(t, s, sp)
	wantStatus(t, r, StatusOutputLimit)
	if p := warmSlotProcesses(t, s); len(p) > 0 {
		t.Fatalf("processes left: %v", p)
	}
}

// TestWarmFallback: specs the pool does not serve run cold, correctly.
func TestWarmFallback(t *testing.T) {
	s := wb(t)
	sp := warmSpec("import os\nprint(os.getpid())")
	sp.Env = append(slices.Clone(warmEnv), "EXTRA=1")
	r := run(t, s, sp)
	wantStatus(t, r, StatusOK)
	if r.Stdout == "1\n" {
		t.Fatalf("served warm with another environment")
	}
}
