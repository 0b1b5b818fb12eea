//go:build linux

package native

import (
	"context"
	"fmt"

	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/testenv"
)

func TestEchoAndExitCode(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: sh("echo hello; echo oops >&2; exit 3")})
	wantStatus(t, r, sandbox.StatusError)
	if r.Stdout != "hello\n" || r.Stderr != "oops\n" || r.ExitCode != 3 || r.FailedStep != "run" {
		t.Fatalf("got %+v", r)
	}
	r = run(t, s, sandbox.Spec{Steps: sh("echo ok")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "ok\n" || r.ExitCode != 0 || r.FailedStep != "" {
		t.Fatalf("got %+v", r)
	}
	if r.CPUTime <= 0 || r.MemoryPeak <= 0 || r.WallTime <= 0 {
		t.Fatalf("no accounting: %+v", r.Result)
	}
}

func TestStdin(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: []sandbox.Step{
		{Name: "a", Argv: []string{"/bin/cat"}, Stdin: []byte("from stdin\n")},
		{Name: "b", Argv: []string{"/bin/cat"}}, // /dev/null: must not block
	}})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "from stdin\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
}

func TestEnvIsExactlySpecEnv(t *testing.T) {
	s := sb(t)
	env := []string{"PATH=/usr/bin:/bin", "FOO=bar baz", "EMPTY="}
	r := run(t, s, sandbox.Spec{Env: env, Steps: []sandbox.Step{{Name: "run", Argv: []string{"env"}}}})
	wantStatus(t, r, sandbox.StatusOK)
	got := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	if !slices.Equal(got, env) {
		t.Fatalf("env inside = %q, want %q", got, env)
	}
	if os.Getenv("CODEEXEC_TEST_SECRET") == "" || strings.Contains(r.Stdout, "hunter2") {
		t.Fatal("secret setup missing or leaked")
	}
}

func TestIdentityAndPrivileges(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: sh("cat /proc/self/status; id; whoami")})
	wantStatus(t, r, sandbox.StatusOK)
	status := map[string]string{}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	want := map[string]string{
		"Uid": "1000 1000 1000 1000", "Gid": "1000 1000 1000 1000", "Groups": "",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2",
	}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("%s = %q, want %q", k, status[k], v)
		}
	}
	if !strings.Contains(r.Stdout, "uid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)") || !strings.HasSuffix(r.Stdout, "sandbox\n") {
		t.Errorf("id/whoami: %s", r.Stdout)
	}
}

func instanceUIDs(s *Linux) (uint32, uint32) {
	return s.InstanceRange(s.Instance), s.InstanceRange(s.Instance + 1)
}

func TestConcurrentRunsHaveDistinctHostUIDs(t *testing.T) {
	s := sb(t)
	// The sleeps last until both are seen (however slow their start), then
	// are cancelled: no window to hit.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tryRun(t, ctx, s, sandbox.Spec{Steps: sh("exec sleep 60")})
			if err != nil || r.Status != sandbox.StatusKilled {
				t.Errorf("status %s, err %v", r.Status, err)
			}
		}()
	}
	lo, hi := instanceUIDs(s)
	uids := map[uint32]bool{}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && len(uids) < 2; {
		for pid, uid := range host.ProcsInRange(lo, hi) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) == "sleep\n" {
				uids[uid] = true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if len(uids) != 2 {
		t.Fatalf("host uids of the two sleeps: %v, want 2 distinct", uids)
	}
	for uid := range uids {
		if (uid-s.Cfg.UIDBase)%host.IDRange != policy.UID {
			t.Errorf("host uid %d is not a slot's inside-1000", uid)
		}
	}
}

func TestProcShowsOnlySandbox(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: sh("cat /proc/1/cmdline; echo; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '")})
	wantStatus(t, r, sandbox.StatusOK)
	lines := strings.Split(r.Stdout, "\n")
	if strings.TrimRight(lines[0], "\x00") != nsinit.Arg0 {
		t.Errorf("pid 1 is %q", lines[0])
	}
	pids := strings.Fields(lines[1])
	if len(pids) > 5 {
		t.Errorf("too many pids visible: %v", pids)
	}
	for _, p := range pids {
		if n, _ := strconv.Atoi(p); n > 20 {
			t.Errorf("host-looking pid %d visible", n)
		}
	}
}

func TestHostPathsInvisible(t *testing.T) {
	s := sb(t)
	marker := fmt.Sprintf("/tmp/codeexec-host-marker-%d", os.Getpid())
	if err := os.WriteFile(marker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(marker)
	paths := []string{"/sys/kernel", "/root", "/home", "/run", testRunDir, marker, "/etc/shadow", "/etc/sudoers", "/var/lib", "/boot", "/proc/kcore_real"}
	script := ""
	for _, p := range paths {
		script += fmt.Sprintf("if [ -e %q ]; then echo VISIBLE %s; fi; ", p, p)
	}
	r := run(t, s, sandbox.Spec{Steps: sh(script + "ls /; ls /etc")})
	wantStatus(t, r, sandbox.StatusOK)
	if strings.Contains(r.Stdout, "VISIBLE") {
		t.Fatalf("host paths visible:\n%s", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "passwd") || !strings.Contains(r.Stdout, "usr") {
		t.Fatalf("listing: %s", r.Stdout)
	}
}

func TestRootIsReadOnly(t *testing.T) {
	s := sb(t)
	code := `
import os, errno
for p in ["/usr/x", "/x", "/etc/passwd", "/etc/ssl/x", "/bin/x", "/dev/x", "/proc/sys/kernel/hostname"]:
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644))
        print(p, "WRITABLE")
    except OSError as e:
        print(p, errno.errorcode[e.errno])
for p in ["/tmp/ok", "/mnt/data/ok", "/dev/shm/ok"]:
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)); print(p, "ok")
`
	r := run(t, s, sandbox.Spec{Steps: py(code)})
	wantStatus(t, r, sandbox.StatusOK)
	// Existing files owned by (inside) root fail the permission check
	// before the read-only one: EACCES there is expected.
	want := "/usr/x EROFS\n/x EROFS\n/etc/passwd EACCES\n/etc/ssl/x EROFS\n/bin/x EROFS\n/dev/x EROFS\n/proc/sys/kernel/hostname EACCES\n/tmp/ok ok\n/mnt/data/ok ok\n/dev/shm/ok ok\n"
	if r.Stdout != want {
		t.Fatalf("got:\n%s\nwant:\n%s\nstderr: %s", r.Stdout, want, r.Stderr)
	}
}

func TestTmpIsCapped(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{DiskBytes: 4 << 20},
		Steps: sh("dd if=/dev/zero of=/tmp/big bs=1M count=8 2>&1; stat -c %s /tmp/big")})
	wantStatus(t, r, sandbox.StatusOK)
	if !strings.Contains(r.Stdout, "No space left on device") {
		t.Fatalf("dd past DiskBytes did not fail with ENOSPC:\n%s", r.Stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if n, _ := strconv.Atoi(lines[len(lines)-1]); n > 4<<20 {
		t.Fatalf("/tmp/big is %d bytes", n)
	}
}

func TestWorkdirIsCappedAndShared(t *testing.T) {
	s := sb(t)
	dir, release, err := s.NewWorkdir(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := os.WriteFile(filepath.Join(dir, "input.txt"), []byte("staged\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, s, sandbox.Spec{Workdir: dir, Steps: sh("pwd; cat input.txt; echo out > result.txt; dd if=/dev/zero of=big bs=1M count=4 2>&1 | grep -o 'No space left on device'")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "/mnt/data\nstaged\nNo space left on device\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "result.txt")); string(b) != "out\n" {
		t.Fatalf("result.txt on host: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "big")); err != nil || fi.Size() > 2<<20 {
		t.Fatalf("big: %v %v", fi, err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("workdir still there after release: %v", err)
	}
}

// TestWorkdirSymlinkNotFollowed: Run chowns the workdir tree for the code,
// and a symlink planted in it must not redirect that chown to a host file.
func TestWorkdirSymlinkNotFollowed(t *testing.T) {
	s := sb(t)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, release, err := s.NewWorkdir(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := os.Symlink(victim, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	r := run(t, s, sandbox.Spec{Workdir: dir, Steps: sh("true")})
	wantStatus(t, r, sandbox.StatusOK)
	var st unix.Stat_t
	if err := unix.Stat(victim, &st); err != nil || st.Uid != 0 {
		t.Fatalf("victim owner %d (%v): chown followed the symlink", st.Uid, err)
	}
	if err := unix.Lstat(filepath.Join(dir, "link"), &st); err != nil || st.Uid == 0 {
		t.Fatalf("the link itself was not chowned: uid %d %v", st.Uid, err)
	}
}

func TestFilesWrittenAsSandboxUser(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{
		Files: []sandbox.File{{Path: "/tmp/src/main.sh", Data: []byte("echo from file\n"), Mode: 0o755}},
		Steps: sh("stat -c '%u %g %a' /tmp/src /tmp/src/main.sh; /tmp/src/main.sh"),
	})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "1000 1000 755\n1000 1000 755\nfrom file\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	_, err := tryRunErr(t, s, sandbox.Spec{Files: []sandbox.File{{Path: "/etc/evil", Data: []byte("x")}}, Steps: sh("true")})
	if err == nil {
		t.Fatal("a file outside /tmp was accepted")
	}
}

func tryRunErr(t *testing.T, s *Linux, spec sandbox.Spec) (runOut, error) {
	t.Helper()
	return tryRun(t, context.Background(), s, spec)
}

func TestForkBombContained(t *testing.T) {
	s := sb(t)
	// The limit itself: forking stops with EAGAIN near Limits.Pids.
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{Pids: 32}, Steps: py(sandboxtest.ForkLoop)})
	wantStatus(t, r, sandbox.StatusOK)
	f := strings.Fields(r.Stdout)
	if len(f) != 2 || f[1] != "EAGAIN" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	if n, _ := strconv.Atoi(f[0]); n < 10 || n > 32+InitThreads {
		t.Fatalf("forked %d processes with Pids=32", n)
	}
	// A real bash fork bomb: ends at the wall time, leaves nothing.
	start := time.Now()
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{Pids: 64, WallTime: 2 * time.Second}, Steps: sh(":(){ :|:& };:; sleep 10")})
	wantStatus(t, r, sandbox.StatusTimeout)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("fork bomb run took %v", el)
	}
	lo, hi := instanceUIDs(s)
	if left := host.ProcsInRange(lo, hi); len(left) > 0 {
		t.Fatalf("processes left: %v", left)
	}
	r = run(t, s, sandbox.Spec{Steps: sh("echo alive")})
	wantStatus(t, r, sandbox.StatusOK)
}

func TestMemoryBomb(t *testing.T) {
	s := sb(t)
	code := `
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
`
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 96 << 20}, Steps: py(code)})
	wantStatus(t, r, sandbox.StatusMemory)
	if r.Signal != "SIGKILL" || r.MemoryPeak < 64<<20 || r.MemoryPeak > 100<<20 {
		t.Fatalf("signal %q peak %d", r.Signal, r.MemoryPeak)
	}
	// tmpfs pages count too: filling /tmp does not get past the memory limit.
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 64 << 20, DiskBytes: 1 << 30},
		Steps: sh("dd if=/dev/zero of=/tmp/f bs=1M count=200")})
	if r.Status != sandbox.StatusMemory && r.Status != sandbox.StatusError {
		t.Fatalf("tmpfs fill: status %s", r.Status)
	}
	if r.MemoryPeak > 70<<20 {
		t.Fatalf("tmpfs fill: peak %d over the limit", r.MemoryPeak)
	}
}

func TestCPULimit(t *testing.T) {
	s := sb(t)
	// Bounds are loose because the host may be loaded; what matters is that
	// the kill came from the CPU limit (SIGXCPU, CPU time), not the wall time.
	lim := sandbox.Limits{CPUTime: time.Second, WallTime: 60 * time.Second}
	start := time.Now()
	r := run(t, s, sandbox.Spec{Limits: lim, Steps: sh("while :; do :; done")})
	wantStatus(t, r, sandbox.StatusTimeout)
	if el := time.Since(start); el > 30*time.Second || r.Signal != "SIGXCPU" || r.CPUTime < 500*time.Millisecond {
		t.Fatalf("after %v: %+v", el, r.Result)
	}
	// Spread over processes that each stay under RLIMIT_CPU (it is per
	// process): 4 x 0.6 s of CPU. The cgroup's count stops it near 1 s.
	spin := "while __import__('time').process_time() < 0.6: pass"
	r = run(t, s, sandbox.Spec{Limits: lim, Steps: sh("for i in 1 2 3 4; do /usr/bin/python3 -I -S -c \"" + spin + "\"; done; echo finished")})
	wantStatus(t, r, sandbox.StatusTimeout)
	if r.CPUTime > 2*time.Second || strings.Contains(r.Stdout, "finished") {
		t.Fatalf("multi-process CPU not stopped: %+v", r.Result)
	}
}

func TestWallTimeout(t *testing.T) {
	s := sb(t)
	start := time.Now()
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{WallTime: 500 * time.Millisecond}, Steps: sh("sleep 100")})
	wantStatus(t, r, sandbox.StatusTimeout)
	// The run's own wall time shows how promptly the limit killed it; the
	// elapsed time also counts the sandbox's start, which load stretches.
	if r.WallTime < 500*time.Millisecond || r.WallTime > 1500*time.Millisecond {
		t.Fatalf("killed after %v of a 500 ms wall limit", r.WallTime)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("the run took %v", el)
	}
	if r.Signal != "SIGKILL" || r.FailedStep != "run" {
		t.Fatalf("%+v", r.Result)
	}
}

func TestStepTimeout(t *testing.T) {
	s := sb(t)
	start := time.Now()
	r := run(t, s, sandbox.Spec{Steps: []sandbox.Step{
		{Name: "compile", Argv: []string{"sleep", "100"}, Timeout: 300 * time.Millisecond},
		{Name: "run", Argv: []string{"echo", "must not run"}},
	}})
	wantStatus(t, r, sandbox.StatusTimeout)
	if el := time.Since(start); el > 1500*time.Millisecond || r.FailedStep != "compile" || r.Stdout != "" {
		t.Fatalf("took %v, %+v", el, r)
	}
}

func TestCancel(t *testing.T) {
	s := sb(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	r, err := tryRun(t, ctx, s, sandbox.Spec{Steps: sh("sleep 100")})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, sandbox.StatusKilled)
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Fatalf("cancel took %v", el)
	}
}

func TestBackgroundDaemonGone(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: sh("setsid nohup sleep 1000 >/dev/null 2>&1 & (sleep 999 &) ; echo started")})
	wantStatus(t, r, sandbox.StatusOK)
	lo, hi := instanceUIDs(s)
	if left := host.ProcsInRange(lo, hi); len(left) > 0 {
		t.Fatalf("processes left after Run: %v", left)
	}
}

func TestOutputFlood(t *testing.T) {
	s := sb(t)
	dir, release, err := s.NewWorkdir(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var out, errw sandboxtest.CountingWriter
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	res, err := s.Run(context.Background(), sandbox.Spec{Workdir: dir, Env: baseEnv, Stdout: &out, Stderr: &errw,
		Limits: sandbox.Limits{OutputBytes: 1 << 20, WallTime: 20 * time.Second},
		Steps:  sh("head -c 300000000 /dev/zero & head -c 300000000 /dev/zero >&2; wait")})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != sandbox.StatusOutputLimit {
		t.Fatalf("status %s", res.Status)
	}
	if out.N+errw.N != 1<<20 {
		t.Fatalf("delivered %d+%d bytes, want exactly %d", out.N, errw.N, 1<<20)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("allocated %d bytes while discarding output", alloc)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %v", el)
	}
}

func TestSyscallFilter(t *testing.T) {
	s := sb(t)
	code := `
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    r = getattr(libc, name)(*args)
    e = ctypes.get_errno()
    print(name, "ok" if r >= 0 else errno.errorcode.get(e, e))
call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
call("unshare", 0x10000000)            # CLONE_NEWUSER: allowed to uid 1000 without the filter
call("unshare", 0x00020000)            # CLONE_NEWNS
call("syscall", 56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER|SIGCHLD)
call("syscall", 435, 0, 0)             # clone3
call("ptrace", 0, 0, 0, 0)             # PTRACE_TRACEME: allowed without the filter
call("syscall", 425, 8, 0)             # io_uring_setup
call("syscall", 321, 0, 0, 0)          # bpf
call("syscall", 323, 0)                # userfaultfd
call("syscall", 250, 0, 0, 0, 0)       # keyctl
call("personality", 0x0400000)         # READ_IMPLIES_EXEC
call("personality", 0xffffffff)        # query: allowed
call("setns", 0, 0)
pid = os.fork()
if pid == 0: os._exit(7)
print("fork", os.waitpid(pid, 0)[1] >> 8)
`
	r := run(t, s, sandbox.Spec{Steps: py(code)})
	wantStatus(t, r, sandbox.StatusOK)
	want := `mount EPERM
unshare EPERM
unshare EPERM
syscall EPERM
syscall ENOSYS
ptrace EPERM
syscall EPERM
syscall EPERM
syscall EPERM
syscall EPERM
personality EPERM
personality ok
setns EPERM
fork 7
`
	if runtime.GOARCH != "amd64" {
		testenv.Skip(t, "syscall numbers are amd64's")
	}
	if r.Stdout != want {
		t.Fatalf("got:\n%s\nwant:\n%s\nstderr: %s", r.Stdout, want, r.Stderr)
	}
	// The binaries fail too.
	r = run(t, s, sandbox.Spec{Steps: sh("unshare -U true 2>&1; echo rc=$?; mount -t tmpfs none /tmp 2>&1; echo rc=$?")})
	if !strings.Contains(r.Stdout, "unshare failed: Operation not permitted") || strings.Count(r.Stdout, "rc=0") != 0 {
		t.Fatalf("binaries: %s", r.Stdout)
	}
}

func TestNetworkDisabled(t *testing.T) {
	s := sb(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from host\n"))
			c.Close()
			accepted <- struct{}{}
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	code := fmt.Sprintf(`
import socket, errno
for fam, typ in [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET6, socket.SOCK_DGRAM), (socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW)]:
    try:
        socket.socket(fam, typ); print(fam, "ok")
    except OSError as e:
        print(int(fam), errno.errorcode[e.errno])
a, b = socket.socketpair(socket.AF_UNIX); a.send(b"unix ok"); print(b.recv(10).decode())
try:
    print(socket.create_connection(("127.0.0.1", %d), timeout=2).recv(100).decode().strip())
except OSError as e:
    print("connect", errno.errorcode[e.errno])
`, port)
	r := run(t, s, sandbox.Spec{Steps: py(code)})
	wantStatus(t, r, sandbox.StatusOK)
	want := "2 EAFNOSUPPORT\n10 EAFNOSUPPORT\n16 EAFNOSUPPORT\n17 EAFNOSUPPORT\nunix ok\nconnect EAFNOSUPPORT\n"
	if r.Stdout != want {
		t.Fatalf("got:\n%s\nwant:\n%s\nstderr: %s", r.Stdout, want, r.Stderr)
	}
	select {
	case <-accepted:
		t.Fatal("the listener accepted a connection from the sandbox")
	default:
	}
	// With Network but nothing serving the run's namespace: TCP/UDP
	// sockets, still no netlink or packet socket, and still not the host's
	// network (the namespace has only lo, down).
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{Network: true}, Steps: py(strings.Replace(code, `print(fam, "ok")`, `print(int(fam), "ok")`, 1))})
	want = "2 ok\n10 ok\n16 EAFNOSUPPORT\n17 EAFNOSUPPORT\nunix ok\nconnect ENETUNREACH\n"
	if r.Stdout != want {
		t.Fatalf("with Network:\n%s\nwant:\n%s\nstderr: %s", r.Stdout, want, r.Stderr)
	}
	select {
	case <-accepted:
		t.Fatal("the listener accepted a connection from a networked sandbox")
	default:
	}
}

// A networked run's namespace is its own, not the server's, and is handed
// to Spec.Net before the code runs; resolv.conf names Net's nameserver.
func TestNetworkOwnNamespace(t *testing.T) {
	s := sb(t)
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	n := &sandboxtest.RecordingNet{}
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{Network: true}, Net: n, Steps: sh("readlink /proc/self/ns/net; cat /etc/resolv.conf")})
	wantStatus(t, r, sandbox.StatusOK)
	want := n.NS + "\nnameserver 192.0.2.53\noptions timeout:2 attempts:2\n"
	if n.NS == "" || n.NS == host || r.Stdout != want {
		t.Fatalf("host %s, attached %q, run saw:\n%s\nwant:\n%s", host, n.NS, r.Stdout, want)
	}
}

func TestKillMinusOneStaysInside(t *testing.T) {
	s := sb(t)
	// Host processes running as every slot's inside-1000 uid: same uid as
	// the code, so only the pid namespace protects them.
	var victims []*exec.Cmd
	for slot := 0; slot < s.Cfg.Slots; slot++ {
		uid := s.HostID(slot) + policy.UID
		c := exec.Command("/bin/sleep", "30")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		victims = append(victims, c)
	}
	defer func() {
		for _, c := range victims {
			c.Process.Kill()
			c.Wait()
		}
	}()
	r := run(t, s, sandbox.Spec{Steps: sh("sleep 100 & kill -9 -1; wait $!; echo inner=$?")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "inner=137\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	for _, c := range victims {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("host process %d died: %v", c.Process.Pid, err)
		}
	}
}

func TestNoSecretsInProc(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{Steps: sh("cat /proc/1/environ 2>&1; echo; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/1/cmdline")})
	wantStatus(t, r, sandbox.StatusOK)
	if strings.Contains(r.Stdout, "hunter2") || strings.Contains(r.Stdout, "CODEEXEC_TEST_SECRET") {
		t.Fatalf("secret visible:\n%s", r.Stdout)
	}
	if !strings.HasPrefix(r.Stdout, "cat: /proc/1/environ: Permission denied") {
		t.Fatalf("init's environ readable:\n%s", r.Stdout)
	}
	// No descriptor of init (config, report channel, rootfs) reaches the code.
	r = run(t, s, sandbox.Spec{Steps: sh("ls /proc/self/fd/ | tr '\\n' ' '")})
	if r.Stdout != "0 1 2 3 " { // 3: ls's own
		t.Fatalf("open fds: %q %s", r.Stdout, r.Stderr)
	}
}

func benchRun(b *testing.B, argv ...string) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	s, err := New(host.Config{RunDir: testRunDir + "-bench", Slots: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		s.Close()
		os.RemoveAll(testRunDir + "-bench")
	}()
	dir, release, err := s.NewWorkdir(1 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	for b.Loop() {
		r, err := s.Run(context.Background(), sandbox.Spec{Workdir: dir, Env: baseEnv, Steps: []sandbox.Step{{Name: "run", Argv: argv}}})
		if err != nil || r.Status != sandbox.StatusOK {
			b.Fatal(r, err)
		}
	}
}

func BenchmarkRunTrue(b *testing.B)   { benchRun(b, "/bin/true") }
func BenchmarkRunPython(b *testing.B) { benchRun(b, "/usr/bin/python3", "-c", "print(1)") }

// TestRecycledCgroupStartsClean: a slot's cgroup is kept for its next run
// (cgroup v1); that run must not inherit the last one's OOM kill, CPU time,
// memory peak or limits.
func TestRecycledCgroupStartsClean(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root")
	}
	s, err := New(host.Config{RunDir: testRunDir + "-recycle", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := cgroup.Kept(s.CG, 0); !ok {
		testenv.Skip(t, "cgroups are only recycled on v1")
	}
	r := run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 64 << 20}, Steps: py("x = bytearray(200 << 20)")})
	wantStatus(t, r, sandbox.StatusMemory)
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 64 << 20, CPUTime: 5 * time.Second}, Steps: py("while True: pass")})
	wantStatus(t, r, sandbox.StatusTimeout)
	kept := idleCgroup(s, 0)
	if kept == nil {
		t.Fatal("the slot's cgroup was not kept for reuse")
	}
	// A plain failure (not a memory one, unless the old OOM kill carried
	// over), small CPU time and peak (unless the old counters did), and 80
	// MB allowed (unless the old 64 MB limit stayed).
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 128 << 20}, Steps: py("x = bytearray(80 << 20); del x; raise SystemExit(1)")})
	wantStatus(t, r, sandbox.StatusError)
	if r.CPUTime > 2*time.Second || r.MemoryPeak < 80<<20 || r.MemoryPeak > 120<<20 {
		t.Fatalf("counters carried over: cpu %v peak %d", r.CPUTime, r.MemoryPeak)
	}
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 128 << 20}, Steps: py("pass")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.MemoryPeak > 40<<20 {
		t.Fatalf("peak carried over: %d", r.MemoryPeak)
	}
	again := idleCgroup(s, 0)
	if again != kept {
		t.Fatal("the kept cgroup was not reused")
	}
	if m := cgroup.MemoryLimit(kept); m != 128<<20 {
		t.Fatalf("limit not updated: %d", m)
	}
	// A run leaves 40 MB in a workdir that stays mounted (charged to its
	// cgroup as tmpfs memory): the next run must get a fresh cgroup, or
	// its 40 MB allocation would not fit its 64 MB limit.
	dir, release, err := s.NewWorkdir(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	r = run(t, s, sandbox.Spec{Workdir: dir, Limits: sandbox.Limits{MemoryBytes: 128 << 20}, Steps: sh("dd if=/dev/zero of=/mnt/data/f bs=1M count=40 2>/dev/null")})
	wantStatus(t, r, sandbox.StatusOK)
	r = run(t, s, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 64 << 20}, Steps: py("x = bytearray(40 << 20); print('ok')")})
	wantStatus(t, r, sandbox.StatusOK)
	fresh := idleCgroup(s, 0)
	if fresh == kept {
		t.Fatal("a cgroup still charged with a workdir's 40 MB was reused")
	}
}

// idleCgroup is the cgroup tree keeps for slot's next run, if any.
func idleCgroup(s *Linux, slot int) cgroup.Run {
	r, _ := cgroup.Kept(s.CG, slot)
	return r
}
