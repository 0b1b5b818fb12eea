//go:build linux

package warm

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"golang.org/x/sys/unix"
)

var (
	warmBox     *Pool
	warmBoxErr  error
	warmBoxOnce sync.Once
)

var warmEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", "MPLBACKEND=Agg", "PYTHONPATH=/mnt/data"}

// wb returns a sandbox with one warm template whose pool is ready.
func wb(t *testing.T) *Pool {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	warmBoxOnce.Do(func() {
		warmBox, warmBoxErr = newPool(host.Config{RunDir: testRunDir + "-warm", Slots: 2,
			Logger: testLogger()}, Config{Python: 1, Env: warmEnv, Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond, Limits: sandbox.Limits{MemoryBytes: 256 << 20, Pids: 64}})
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
func warmSpec(code string, args ...string) sandbox.Spec {
	return sandbox.Spec{
		Warm:   "python",
		Steps:  []sandbox.Step{{Name: "run", Argv: append([]string{"/usr/bin/python3", "-u", "/tmp/code/main.py"}, args...)}},
		Files:  []sandbox.File{{Path: "/tmp/code/main.py", Data: []byte(code)}},
		Env:    warmEnv,
		Limits: sandbox.Limits{MemoryBytes: 256 << 20, Pids: 64, WallTime: 20 * time.Second, FileBytes: 256 << 20, DiskBytes: 128 << 20},
	}
}

func TestWarmBasic(t *testing.T) {
	s := wb(t)
	r := run(t, s, warmSpec("import sys, os\nprint('hi', sys.argv[1:], os.getcwd(), os.getuid())\nopen('out.txt','w').write('x')\n", "a", "b"))
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "hi ['a', 'b'] /mnt/data 1000\n" {
		t.Fatalf("stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	if b, err := os.ReadFile(r.Workdir + "/out.txt"); err != nil || string(b) != "x" {
		t.Fatalf("output file: %q %v", b, err)
	}
	t.Logf("wall %v cpu %v mem %d", r.WallTime, r.CPUTime, r.MemoryPeak)
	if w := s.Describe().Warm; w == nil || w.Python.Ready != TemplatesPerSlot {
		t.Errorf("describe: %+v", w)
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
kinds = []
for f in sorted(int(f) for f in os.listdir("/proc/self/fd")):
    try:
        k = os.readlink("/proc/self/fd/%d" % f).split(":")[0]
        flags = int(dict(l.split(":\t") for l in open("/proc/self/fdinfo/%d" % f).read().splitlines() if ":\t" in l)["flags"], 8)
        kinds.append("%s%s%s" % ("%d:" % f if f <= 2 else "", k.split("/")[1] if k.startswith("/") else k, "+cloexec" if flags & 0o2000000 else ""))
    except OSError:
        pass  # listdir's own, closed
print("fds", kinds)
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
	wantStatus(t, r, sandbox.StatusOK)
	want := []string{
		"ids 1000 1000 1000 []", "CapInh 0000000000000000", "CapPrm 0000000000000000", "CapEff 0000000000000000",
		"CapBnd 0000000000000000", "CapAmb 0000000000000000", "NoNewPrivs 1", "Seccomp 2", "Seccomp_filters 2",
		// The code is pid 2 under the reaper, as under a cold run's init.
		"pids [1, 2]", "host sandbox", "tmp ['code']",
		// Nothing but stdio: the socket to the server stays with pid 1.
		"fds ['0:dev', '1:pipe', '2:pipe']",
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
	// The abstract socket outlives the run's main process in a child: the
	// next run (same template, same network namespace) must not find it.
	first := `import os, subprocess, sys, numpy, random
subprocess.Popen([sys.executable, "-c", "import socket, time; s = socket.socket(socket.AF_UNIX); s.bind(b'\\0codeexec-probe'); s.listen(); print('bound', flush=True); time.sleep(100)"], stdout=subprocess.PIPE).stdout.readline()
open("/tmp/secret", "w").write("x")
os.makedirs("/dev/shm/x", exist_ok=True)
subprocess.Popen(["sleep", "100"], start_new_session=True)
sys.modules["planted"] = 1
import builtins; builtins.planted = 1
print(numpy.random.randint(1 << 30), random.randint(0, 1 << 30))
`
	second := `import os, sys, numpy, random, builtins, socket
c = socket.socket(socket.AF_UNIX)
try:
    c.connect(b"\0codeexec-probe"); print("CONNECTED to the previous run")
except OSError:
    pass
print(os.path.exists("/tmp/secret"), os.listdir("/dev/shm"), "planted" in sys.modules, hasattr(builtins, "planted"))
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print(numpy.random.randint(1 << 30), random.randint(0, 1 << 30))
`
	r1 := run(t, s, warmSpec(first))
	wantStatus(t, r1, sandbox.StatusOK)
	r2 := run(t, s, warmSpec(second))
	wantStatus(t, r2, sandbox.StatusOK)
	lines := strings.Split(r2.Stdout, "\n")
	if lines[0] != "False [] False False" || lines[1] != "[1, 2]" {
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
func warmSlotProcesses(t *testing.T, s *Pool) []string {
	t.Helper()
	var out []string
	for i := 0; i < s.Describe().Slots-s.HostResources().Cfg.Slots; i++ { // the templates
		uid := s.HostResources().HostID(s.HostResources().Cfg.Slots+i) + policy.UID
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
	if r.Status != sandbox.StatusError || r.ExitCode != 3 || r.FailedStep != "run" {
		t.Fatalf("exit 3: %+v", r.Result)
	}
	r = run(t, s, warmSpec("x = 1\nraise ValueError('boom')"))
	if r.Status != sandbox.StatusError || r.ExitCode != 1 || !strings.HasPrefix(r.Stderr, "Traceback (most recent call last):\n  File \"/tmp/code/main.py\", line 2, in <module>\n") || !strings.HasSuffix(r.Stderr, "ValueError: boom\n") {
		t.Fatalf("exception: %+v %q", r.Result, r.Stderr)
	}
	r = run(t, s, warmSpec("print(("))
	if r.Status != sandbox.StatusError || !strings.Contains(r.Stderr, "SyntaxError") || !strings.Contains(r.Stderr, "/tmp/code/main.py") {
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
	wantStatus(t, r, sandbox.StatusTimeout)
	sp = warmSpec("import time\ntime.sleep(30)")
	sp.Limits.WallTime = 500 * time.Millisecond
	r = run(t, s, sp)
	wantStatus(t, r, sandbox.StatusTimeout)
	r = run(t, s, warmSpec("x = []\nwhile True:\n    x.append(bytearray(16 << 20))"))
	wantStatus(t, r, sandbox.StatusMemory)
	if r.MemoryPeak < 200<<20 || r.MemoryPeak > 300<<20 {
		t.Errorf("memory peak %d", r.MemoryPeak)
	}
	sp = warmSpec("import sys\nwhile True: sys.stdout.write('A' * 65536)")
	sp.Limits.OutputBytes = 1 << 20
	r = run(t, s, sp)
	wantStatus(t, r, sandbox.StatusOutputLimit)
	if p := warmSlotProcesses(t, s); len(p) > 0 {
		t.Fatalf("processes left: %v", p)
	}
}

// TestWarmFallback: specs the pool does not serve run cold, correctly.
func TestWarmFallback(t *testing.T) {
	s := wb(t)
	// Python code with an environment other than the templates' is not
	// run by a template's interpreter: the interpreter is exec'd, and
	// sees that environment.
	sp := warmSpec("import os, gc\nprint(os.environ['EXTRA'], gc.get_freeze_count() == 0)")
	sp.Env = append(slices.Clone(warmEnv), "EXTRA=1")
	r := run(t, s, sp)
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "1 True\n" {
		t.Fatalf("another environment: %q", r.Stdout)
	}
	// A two-step spec runs cold.
	sp = warmSpec("print('second')")
	sp.Steps = append([]sandbox.Step{{Name: "compile", Argv: []string{"/bin/true"}}}, sp.Steps...)
	served := s.Served()
	r = run(t, s, sp)
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "second\n" || s.Served() != served {
		t.Fatalf("two steps: %q, served warm %v", r.Stdout, s.Served() != served)
	}
}

// TestWarmExecProgram: a program delivered with the request (the compile
// cache's shape) is exec'd by a warm child, with its argv, environment,
// stdin and exit status, under the same isolation.
func TestWarmExecProgram(t *testing.T) {
	s := wb(t)
	script := `#!/bin/sh
echo "pid=$$ uid=$(id -u) args=$* env=$GREETING"
cat
tr '\0' ' ' </proc/1/cmdline; echo
ign=$(awk '/^SigIgn/ {print $2}' /proc/$$/status)
blk=$(awk '/^SigBlk/ {print $2}' /proc/$$/status)
echo "ignored=$(( 0x$ign & 0x7fffffff )) blocked=$(( 0x$blk ))"
exit 7
`
	sp := sandbox.Spec{
		Steps:  []sandbox.Step{{Name: "run", Argv: []string{"/tmp/build/main", "a", "b c"}, Stdin: []byte("from stdin\n")}},
		Files:  []sandbox.File{{Path: "/tmp/build/main", Data: []byte(script), Mode: 0o755}},
		Env:    []string{"PATH=/usr/bin:/bin", "GREETING=hello"},
		Limits: warmSpec("").Limits,
	}
	r := run(t, s, sp)
	if r.Status != sandbox.StatusError || r.ExitCode != 7 {
		t.Fatalf("status %s exit %d stderr %q", r.Status, r.ExitCode, r.Stderr)
	}
	// pid 2 under the reaper (pid 1), as a cold run's program is under
	// the init. No standard signal ignored or blocked: the Python that
	// exec'd it ignores SIGPIPE and SIGXFSZ, the program must not.
	if r.Stdout != "pid=2 uid=1000 args=a b c env=hello\nfrom stdin\ncodeexec-sandbox-init \nignored=0 blocked=0\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	sp.Files[0].Data = []byte("\x7fELF garbage")
	r = run(t, s, sp)
	if r.Status != sandbox.StatusError || r.ExitCode != 126 || !strings.Contains(r.Stderr, "/tmp/build/main") {
		t.Fatalf("garbage program: %s exit %d stderr %q", r.Status, r.ExitCode, r.Stderr)
	}
	if p := warmSlotProcesses(t, s); len(p) > 0 {
		t.Fatalf("processes left: %v", p)
	}
}

// TestWarmForgedReport: the code may queue pid 1 the signal by which its
// process reports its exit status (it runs as the same uid). A forged
// "exited" ends the run (and kills what it left running), which is no
// more than the code could do by exiting; the same signal from any other
// process of the run is ignored and the real exit status counts.
func TestWarmForgedReport(t *testing.T) {
	s := wb(t)
	const sigqueue = `import ctypes, os, signal, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
class sigval(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
REPORT = signal.SIGRTMIN + 2
`
	start := time.Now()
	r := run(t, s, warmSpec(sigqueue+`subprocess.Popen(["sleep", "60"], start_new_session=True)
if libc.sigqueue(1, REPORT, sigval(0)) != 0:
    print("sigqueue", ctypes.get_errno()); sys.exit(1)
while True:
    open("/mnt/data/late", "w").write("x")
`))
	if r.Status != sandbox.StatusOK || r.ExitCode != 0 || time.Since(start) > 10*time.Second {
		t.Fatalf("forged report: %s exit %d after %v: %q %q", r.Status, r.ExitCode, time.Since(start), r.Stdout, r.Stderr)
	}
	if p := warmSlotProcesses(t, s); len(p) > 0 {
		t.Fatalf("processes left after a forged report: %v", p)
	}
	r = run(t, s, warmSpec(sigqueue+`subprocess.run([sys.executable, "-c", "import ctypes, signal, sys; sys.exit(ctypes.CDLL(None).sigqueue(1, signal.SIGRTMIN + 2, 0))"], check=True)
print("still here")
raise SystemExit(5)
`))
	if r.Status != sandbox.StatusError || r.ExitCode != 5 || r.Stdout != "still here\n" {
		t.Fatalf("report from another process: %s exit %d stdout %q stderr %q", r.Status, r.ExitCode, r.Stdout, r.Stderr)
	}
}

// TestWarmLeanAndPreloaded: code that imports only the standard library
// runs in a lean template (nothing preloaded), code that imports more in a
// preloaded one; both with the same isolation (TestWarmIsolation runs lean).
func TestWarmLeanAndPreloaded(t *testing.T) {
	s := wb(t)
	served := s.Served()
	r := run(t, s, warmSpec("import os, sys\nprint(os.getpid(), 'pandas' in sys.modules)"))
	if r.Stdout != "2 False\n" || s.Served() != served+1 {
		t.Fatalf("stdlib-only code: %q (want a warm child with nothing preloaded)", r.Stdout)
	}
	r = run(t, s, warmSpec("import sys, numpy\nprint(__import__('os').getpid(), 'pandas' in sys.modules)"))
	if r.Stdout != "2 True\n" || s.Served() != served+2 {
		t.Fatalf("numpy code: %q (want a preloaded warm child)", r.Stdout)
	}
}

// TestWarmReseedsNatively checks that on this host every template found
// its generators' states for the native reseeding (the Python fallback is
// ~10 ms per numpy run); TestWarmNothingCarriesOver checks the numbers
// differ between runs.
func TestWarmReseedsNatively(t *testing.T) {
	s := wb(t)
	s.warm.mu.Lock()
	defer s.warm.mu.Unlock()
	for _, tm := range s.warm.tmpls {
		if len(tm.reseedInPython) > 0 {
			t.Errorf("template slot %d (lean %v) reseeds %v in Python", tm.slot, tm.lean, tm.reseedInPython)
		}
	}
}

// TestWarmPinsPages checks that every template learned the pages a child
// writes and pinned them (copied at fork rather than faulted on: the
// largest single cost of a warm Python run on a paravirtualised VM).
func TestWarmPinsPages(t *testing.T) {
	s := wb(t)
	s.warm.mu.Lock()
	defer s.warm.mu.Unlock()
	for _, tm := range s.warm.tmpls {
		if tm.pinned < 50 {
			t.Errorf("template slot %d (lean %v) pinned %d pages", tm.slot, tm.lean, tm.pinned)
		} else {
			t.Logf("template slot %d (lean %v) pinned %d pages", tm.slot, tm.lean, tm.pinned)
		}
	}
}

// TestWarmChildRefusesBadRequests sends requests past validateSpec, as a
// server bug would: the child's native code must refuse file paths that
// leave /tmp and Python code with an environment other than the pool's,
// before anything runs, and write nothing. A request too large for the
// frame's 32-bit lengths (lowered here to 64 KiB) is refused before it is
// sent.
func TestWarmChildRefusesBadRequests(t *testing.T) {
	s := wb(t)
	saved := maxWarmFrame
	maxWarmFrame = 64 << 10
	defer func() { maxWarmFrame = saved }()
	for _, c := range []struct {
		name string
		edit func(*sandbox.Spec)
		want string
	}{
		{"dotdot", func(sp *sandbox.Spec) {
			sp.Files = append(sp.Files, sandbox.File{Path: "/tmp/../etc/x", Data: []byte("x")})
		}, "bad file path"},
		{"deep dotdot", func(sp *sandbox.Spec) {
			sp.Files = append(sp.Files, sandbox.File{Path: "/tmp/a/../../x", Data: []byte("x")})
		}, "bad file path"},
		{"outside", func(sp *sandbox.Spec) { sp.Files = append(sp.Files, sandbox.File{Path: "/etc/x", Data: []byte("x")}) }, "bad file path"},
		{"empty part", func(sp *sandbox.Spec) { sp.Files = append(sp.Files, sandbox.File{Path: "/tmp//x", Data: []byte("x")}) }, "bad file path"},
		{"dot", func(sp *sandbox.Spec) { sp.Files = append(sp.Files, sandbox.File{Path: "/tmp/a/.", Data: []byte("x")}) }, "bad file path"},
		{"env", func(sp *sandbox.Spec) { sp.Env = append(slices.Clone(sp.Env), "EXTRA=1") }, "environment is not the pool's"},
		{"too large", func(sp *sandbox.Spec) {
			sp.Files = append(sp.Files, sandbox.File{Path: "/tmp/big", Data: make([]byte, 100<<10)})
		}, "exceeds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, release, err := s.NewWorkdir(16 << 20)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			spec := warmSpec("open('/mnt/data/ran', 'w').write('x')")
			spec.Workdir = dir
			c.edit(&spec)
			lim := spec.Limits.WithDefaults()
			sp := s.warm.acquire(context.Background(), false)
			if sp == nil {
				t.Fatal("no warm child")
			}
			_, started, err := s.warm.exec(context.Background(), spec, lim, sp, false)
			s.warm.retire(sp)
			if started || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("started %v, err %v; want a refusal with %q", started, err, c.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
				t.Fatal("the code ran")
			}
		})
	}
}

// TestWarmOffWithoutCompiler: a host without a C compiler cannot build the
// templates' helper; the sandbox still starts, without its warm pool, and
// runs Python cold.
func TestWarmOffWithoutCompiler(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// An instance of its own beside the warm sandbox (same lock directory):
	// two instances must never share uid ranges and cgroups.
	inst := wb(t).HostResources().Cfg.InstanceDir
	saved := ccCandidates
	ccCandidates = []string{"/nonexistent/cc"}
	defer func() { ccCandidates = saved }()
	s, err := newPool(host.Config{RunDir: testRunDir + "-nocc", Slots: 1, InstanceDir: inst,
		Logger: testLogger()}, Config{Python: 1, Env: warmEnv, Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.warm != nil {
		t.Fatal("warm pool started without a compiler for its helper")
	}
	r := run(t, s, warmSpec("import os\nprint(os.getpid())"))
	wantStatus(t, r, sandbox.StatusOK)
	if s.Served() != 0 {
		t.Fatalf("ran warm: %q", r.Stdout)
	}
}

// TestWarmWithoutMemlock: with Docker's default RLIMIT_MEMLOCK (64 KiB)
// templates cannot pin their pages; they say so and serve runs unpinned.
// A lowered hard limit cannot be raised again here, so the check runs in
// a child process of this test binary.
func TestWarmWithoutMemlock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	instances := os.Getenv("CODEEXEC_TEST_MEMLOCK_CHILD")
	if instances == "" {
		// The child's sandbox takes its instance (uid ranges, cgroup
		// tree) from the same lock directory as this process's warm
		// sandbox, which stays up: two instances must never share one.
		wb(t)
		cmd := exec.Command(os.Args[0], "-test.run=^TestWarmWithoutMemlock$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "CODEEXEC_TEST_MEMLOCK_CHILD="+warmBox.HostResources().Cfg.InstanceDir)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestWarmWithoutMemlock") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 64 << 10, Max: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	s, err := newPool(host.Config{RunDir: testRunDir + "-memlock", Slots: 1, InstanceDir: instances,
		Logger: testLogger()}, Config{Python: 1, Env: warmEnv, Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond, Limits: sandbox.Limits{MemoryBytes: 256 << 20, Pids: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.WaitWarm(ctx); err != nil {
		t.Fatal(err)
	}
	s.warm.mu.Lock()
	for _, tm := range s.warm.tmpls {
		if tm.pinned != -int(unix.ENOMEM) {
			t.Errorf("template slot %d pinned %d with a 64 KiB memlock limit, want -ENOMEM", tm.slot, tm.pinned)
		}
	}
	s.warm.mu.Unlock()
	r := run(t, s, warmSpec("import os, random\nprint(os.getpid(), random.random() != random.random())"))
	if r.Status != sandbox.StatusOK || r.Stdout != "2 True\n" || s.Served() != 1 {
		t.Fatalf("unpinned warm run: %s %q %q", r.Status, r.Stdout, r.Stderr)
	}
}

// TestWarmRunsInItsOwnCgroup: the code of a warm run, and its pid 1, are in
// a cgroup of their own, not the template's, from the code's first
// instruction on (cgroup v1 and v2: each hierarchy line of /proc/PID/cgroup,
// read on the host, names a child cgroup of the template's slot); the code
// itself sees only "/" (its own cgroup namespace).
func TestWarmRunsInItsOwnCgroup(t *testing.T) {
	s := wb(t)
	const show = "import os\nprint(os.readlink('/proc/self/ns/pid'), os.getpid(), repr(open('/proc/self/cgroup').read() + open('/proc/1/cgroup').read()), flush=True)\n" +
		"import time\nwhile not os.path.exists('/mnt/data/go'): time.sleep(0.02)\n"
	for _, code := range []string{show, "import numpy\n" + show} {
		served := s.Served()
		line, finish := firstLineOfRun(t, s, warmSpec(code))
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			t.Fatalf("first line %q", line)
		}
		for _, l := range strings.Split(strings.Trim(f[2], "'"), "\\n") {
			if l != "" && !strings.HasSuffix(l, ":/") {
				t.Errorf("the code sees the cgroup line %q, want only / (its own cgroup namespace)", l)
			}
		}
		inner, _ := strconv.Atoi(f[1])
		self := hostCgroupLines(t, hostPidOf(t, f[0], inner))
		one := hostCgroupLines(t, hostPidOf(t, f[0], 1))
		wantStatus(t, finish(), sandbox.StatusOK)
		if s.Served() != served+1 {
			t.Fatal("not served warm")
		}
		if self != one {
			t.Fatalf("the code and its pid 1 are in different cgroups:\n%s--\n%s", self, one)
		}
		// On a v1 (or hybrid) host the memory and pids hierarchies count;
		// the unified "0::" line of a hybrid host manages nothing. On v2,
		// the "0::" line.
		v1 := strings.Contains(self, ":memory:")
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(self), "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) != 3 {
				continue
			}
			if v1 && !strings.Contains(","+f[1]+",", ",memory,") && !strings.Contains(","+f[1]+",", ",pids,") || !v1 && f[0] != "0" {
				continue
			}
			var id int
			base := f[2][strings.LastIndexByte(f[2], '/')+1:]
			if _, err := fmt.Sscanf(base, "s%d", &id); err != nil || id < 1000 || id%1000 == 0 {
				t.Errorf("%q: not a warm child's cgroup (the template's is s<slot+1>000)", line)
			}
			n++
		}
		if n == 0 {
			t.Fatalf("no memory, pids or v2 line in\n%s", self)
		}
	}
}

// firstLineOfRun starts spec (whose code waits for /mnt/data/go after its
// first line) and returns that line, and finish, which creates the file
// and returns the run's outcome.
func firstLineOfRun(t *testing.T, s *Pool, spec sandbox.Spec) (string, func() runOut) {
	t.Helper()
	dir, release, err := s.NewWorkdir(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = release() })
	spec.Workdir = dir
	if spec.Env == nil {
		spec.Env = sandboxtest.BaseEnv
	}
	out, errb := sandboxtest.NewLineWriter(), sandboxtest.NewLineWriter()
	spec.Stdout, spec.Stderr = out, errb
	type ran struct {
		res sandbox.Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := s.Run(context.Background(), spec)
		done <- ran{res, err}
	}()
	finish := func() runOut {
		if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatalf("Run: %v", r.err)
		}
		return runOut{Result: r.res, Stdout: out.String(), Stderr: errb.String(), Workdir: dir}
	}
	select {
	case line := <-out.First:
		return line, finish
	case r := <-done:
		t.Fatalf("run ended before its first line: %+v %v\nstdout %q\nstderr %q", r.res, r.err, out.String(), errb.String())
	case <-time.After(2 * time.Minute):
		t.Fatal("no first line from the run within 2 minutes")
	}
	return "", nil
}

// TestWarmCloseDuringStart: a sandbox closed while its templates are still
// being started (a server stopped at once) closes promptly: nothing waits
// on a template that was killed before it read its configuration.
func TestWarmCloseDuringStart(t *testing.T) {
	inst := wb(t).HostResources().Cfg.InstanceDir // an instance of its own (see TestWarmOffWithoutCompiler)
	// At several points of the templates' start: before their init runs,
	// while it reads its configuration, during the preload.
	for _, after := range []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		s, err := newPool(host.Config{RunDir: testRunDir + "-closing", Slots: 1, InstanceDir: inst,
			Logger: testLogger()}, Config{Python: 1, Env: warmEnv, Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(after)
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("closed %v after the start: Close still waiting after 30 s", after)
		}
	}
}

// TestUnitWarmServesByTemplateName: whether the template's interpreter runs a
// spec's code is decided by the template the spec names (Spec.Warm, which
// the engine takes from the language table), not by argv alone: the same
// argv without the name is exec'd in a warm child instead, and a spec
// naming another template is never run in this one's interpreter.
func TestUnitWarmServesByTemplateName(t *testing.T) {
	p := &warmPool{cfg: Config{Template: "python", Interpreter: "/usr/bin/python3", Env: warmEnv}}
	for _, c := range []struct {
		name     string
		warm     string
		ok, exec bool
	}{{"named", "python", true, false}, {"unnamed", "", true, true}, {"other template", "ruby", true, true}} {
		spec := warmSpec("print(1)")
		spec.Warm = c.warm
		ok, exec, code := p.serves(spec, spec.Limits.WithDefaults())
		if ok != c.ok || exec != c.exec || (!exec && string(code) != "print(1)") {
			t.Errorf("%s: serves %v, exec %v, code %q; want %v, %v", c.name, ok, exec, code, c.ok, c.exec)
		}
	}
	spec := warmSpec("print(1)")
	spec.Env = append(slices.Clone(spec.Env), "EXTRA=1")
	if ok, exec, _ := p.serves(spec, spec.Limits.WithDefaults()); !ok || !exec {
		t.Errorf("other environment: serves %v exec %v, want it exec'd (the template imported under its own)", ok, exec)
	}
}
