//go:build linux

package gvisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/cgroup"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/policy"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// gv returns a fresh gVisor sandbox, closed at the end of the test. Without
// runsc the tests skip, except in CI, where its absence is a failure.
func gv(t *testing.T) *GVisor {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root")
	}
	if _, err := exec.LookPath("runsc"); err != nil {
		testenv.Skip(t, "runsc is not installed (Debian package runsc)")
	}
	runDir := testRunDir + "-gvisor-" + t.Name()
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	g, err := New(Config{Config: host.Config{RunDir: runDir, Slots: 2, Logger: log}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(runDir)
	})
	return g
}

func grun(t *testing.T, s sandbox.Sandbox, spec sandbox.Spec) runOut {
	t.Helper()
	ro, err := gtryRun(t, context.Background(), s, spec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return ro
}

func gtryRun(t *testing.T, ctx context.Context, s sandbox.Sandbox, spec sandbox.Spec) (runOut, error) {
	t.Helper()
	if spec.Workdir == "" {
		dir, release, err := s.NewWorkdir(16 << 20)
		if err != nil {
			t.Fatal(err)
		}
		heldWorkdirs.Store(dir, true)
		t.Cleanup(func() {
			if err := release(); err != nil {
				t.Error(err)
			}
			heldWorkdirs.Delete(dir)
		})
		spec.Workdir = dir
	}
	if spec.Env == nil {
		spec.Env = sandboxtest.BaseEnv
	}
	if spec.Limits.WallTime == 0 {
		spec.Limits.WallTime = 20 * time.Second
	}
	var out, errb bytes.Buffer
	spec.Stdout, spec.Stderr = &out, &errb
	res, err := s.Run(ctx, spec)
	return runOut{Result: res, Stdout: out.String(), Stderr: errb.String(), Workdir: spec.Workdir}, err
}

// heldWorkdirs are the tests' own workdirs (released at test cleanup).
var heldWorkdirs sync.Map

// gvisorLeftovers lists what of the instance exists on the host besides
// its root, its lock and the tests' workdirs: its slots' cgroups and their
// processes, mounts, run directories.
func gvisorLeftovers(g *GVisor) []string {
	var out []string
	ctrls, _ := os.ReadDir(cgroup.Root)
	for slot := 0; slot < g.cfg.Slots; slot++ {
		rel := fmt.Sprintf("/%s/%d/s%d", g.cfg.CgroupParent, g.base.Instance, slot)
		for _, c := range ctrls {
			if _, err := os.Stat(filepath.Join(cgroup.Root, c.Name(), rel)); err == nil {
				out = append(out, "cgroup "+c.Name()+rel)
			}
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
		for _, p := range procs {
			data, _ := os.ReadFile(p)
			if bytes.Contains(data, []byte(":"+rel+"\n")) {
				out = append(out, "process "+p)
			}
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], g.base.WorkRoot+"/") {
			if _, held := heldWorkdirs.Load(f[4]); !held {
				out = append(out, "mount "+f[4])
			}
		}
	}
	ents, _ := os.ReadDir(g.base.WorkRoot)
	for _, e := range ents {
		if _, held := heldWorkdirs.Load(filepath.Join(g.base.WorkRoot, e.Name())); e.Name() != "rootfs" && !held {
			out = append(out, "file "+e.Name())
		}
	}
	return out
}

func gwantClean(t *testing.T, g *GVisor) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for len(gvisorLeftovers(g)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l := gvisorLeftovers(g); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

func TestGVisorEchoExitEnvIdentity(t *testing.T) {
	g := gv(t)
	r := grun(t, g, sandbox.Spec{Steps: sh("echo hello; echo oops >&2; exit 3")})
	wantStatus(t, r, sandbox.StatusError)
	if r.Stdout != "hello\n" || r.Stderr != "oops\n" || r.ExitCode != 3 || r.FailedStep != "run" {
		t.Fatalf("got %+v", r)
	}
	env := []string{"PATH=/usr/bin:/bin", "FOO=bar baz", "EMPTY="}
	r = grun(t, g, sandbox.Spec{Env: env, Steps: []sandbox.Step{{Name: "run", Argv: []string{"env"}}}})
	wantStatus(t, r, sandbox.StatusOK)
	if got := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n"); !slices.Equal(got, env) {
		t.Fatalf("env inside = %q, want %q", got, env)
	}
	r = grun(t, g, sandbox.Spec{Steps: sh("grep -E '^(Uid|Gid|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status; id -G; hostname")})
	wantStatus(t, r, sandbox.StatusOK)
	for _, want := range []string{"Uid:\t1000\t1000\t1000\t1000", "Gid:\t1000\t1000\t1000\t1000", "CapEff:\t0000000000000000",
		"CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000", "\n1000\n", "sandbox\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("missing %q in:\n%s", want, r.Stdout)
		}
	}
	if r.CPUTime <= 0 || r.MemoryPeak <= 0 || r.WallTime <= 0 {
		t.Errorf("no accounting: %+v", r.Result)
	}
	gwantClean(t, g)
}

func TestGVisorStepsFilesStdin(t *testing.T) {
	g := gv(t)
	r := grun(t, g, sandbox.Spec{
		Files: []sandbox.File{{Path: "/tmp/src/a.sh", Data: []byte("echo from-file; cat; touch /mnt/data/out.txt\n"), Mode: 0o755}},
		Steps: []sandbox.Step{
			{Name: "compile", Argv: []string{"sh", "-c", "cp /tmp/src/a.sh /tmp/b.sh && python3 -c 'import os; s = os.stat(\"/tmp/src/a.sh\"); print(s.st_uid, oct(s.st_mode))'"}},
			{Name: "run", Argv: []string{"/bin/sh", "/tmp/b.sh"}, Stdin: []byte("from stdin\n")},
		}})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "1000 0o100755\nfrom-file\nfrom stdin\n" {
		t.Fatalf("stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	fi, err := os.Stat(filepath.Join(r.Workdir, "out.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != policy.UID {
		t.Fatalf("out.txt owned by %d", st.Uid)
	}
	r = grun(t, g, sandbox.Spec{Steps: []sandbox.Step{{Name: "run", Argv: []string{"no-such-command"}}}})
	wantStatus(t, r, sandbox.StatusError)
	if r.ExitCode != 127 {
		t.Fatalf("not found: %+v %q", r.Result, r.Stderr)
	}
	gwantClean(t, g)
}

func TestGVisorFilesystem(t *testing.T) {
	g := gv(t)
	code := `import os
for p in ["/usr/x", "/etc/x", "/x", "/bin/x", "/proc/sys/kernel/hostname", "/dev/x", "/sys/x"]:
    try:
        open(p, "w").write("x"); print("WROTE", p)
    except OSError:
        pass
for p in ["/etc/shadow", "/root", "/home", "/run", "/sys/kernel", "/sys/fs", "` + g.base.WorkRoot + `", "` + testRunDir + `"]:
    if os.path.exists(p): print("VISIBLE", p)
print(sorted(os.listdir("/")))
print(sorted(os.listdir("/tmp")))
print(len([p for p in os.listdir("/proc") if p.isdigit()]))
open("/tmp/t", "w").write("ok"); open("/mnt/data/t", "w").write("ok")
print("writable")
`
	r := grun(t, g, sandbox.Spec{Steps: py(code)})
	wantStatus(t, r, sandbox.StatusOK)
	if strings.Contains(r.Stdout, "WROTE") || strings.Contains(r.Stdout, "VISIBLE") || !strings.HasSuffix(r.Stdout, "writable\n") {
		t.Fatalf("%s\n%s", r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "\n[]\n") {
		t.Fatalf("/tmp not private and empty: %s", r.Stdout)
	}
	// /tmp is capped at DiskBytes.
	r = grun(t, g, sandbox.Spec{Limits: sandbox.Limits{DiskBytes: 8 << 20}, Steps: sh("dd if=/dev/zero of=/tmp/big bs=1M count=20 2>&1 | grep -c 'No space left'")})
	if r.Stdout != "1\n" {
		t.Fatalf("/tmp not capped: %+v %q %q", r.Result, r.Stdout, r.Stderr)
	}
	gwantClean(t, g)
}

func TestGVisorNoNetwork(t *testing.T) {
	g := gv(t)
	code := `import socket
for fam, addr in ((socket.AF_INET, ("1.1.1.1", 80)), (socket.AF_INET, ("127.0.0.1", 22)), (socket.AF_INET6, ("::1", 22))):
    try:
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2); s.connect(addr); print("CONNECTED", addr)
    except OSError as e:
        print("blocked")
print(sorted(n for _, n in socket.if_nameindex()))
`
	r := grun(t, g, sandbox.Spec{Steps: py(code)})
	wantStatus(t, r, sandbox.StatusOK)
	if strings.Contains(r.Stdout, "CONNECTED") || strings.Count(r.Stdout, "blocked") != 3 {
		t.Fatalf("network: %s %s", r.Stdout, r.Stderr)
	}
}

// tunNet is a NetAttacher that gives the namespace an eth0 (a TUN device,
// as the egress layer does) with 192.0.2.10/24 and a default route.
type tunNet struct {
	attached int
	dev      *os.File
}

func (n *tunNet) Attach(nsPath string) error {
	n.attached++
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the namespace it entered.
		runtime.LockOSThread()
		ns, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		n.dev = os.NewFile(uintptr(fd), "tun")
		ifr, _ := unix.NewIfreq("eth0")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		var lo, link netlink.Link
		if err == nil {
			lo, err = netlink.LinkByName("lo")
		}
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err == nil {
			link, err = netlink.LinkByName("eth0")
		}
		addr, _ := netlink.ParseAddr("192.0.2.10/24")
		if err == nil {
			err = netlink.AddrAdd(link, addr)
		}
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err == nil {
			err = netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("192.0.2.1")})
		}
		errc <- err
	}()
	return <-errc
}

func (n *tunNet) Nameserver() string { return "192.0.2.53" }

// TestGVisorNetworkOwnNamespace: a networked run's last step runs in the
// network namespace handed to Spec.Net (gVisor's netstack takes over its
// eth0, address and route), with resolv.conf naming Net's nameserver and
// only AF_UNIX/INET/INET6 sockets; an earlier step (a compiler) has
// loopback only, and gVisor's own socket families.
func TestGVisorNetworkOwnNamespace(t *testing.T) {
	g := gv(t)
	probe := `import socket
print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
print(repr(open("/etc/resolv.conf").read()))
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("192.0.2.1", 53)); print(s.getsockname()[0])
except OSError as e:
    print(type(e).__name__)
import errno
for name, fam, typ in (("AF_PACKET", 17, socket.SOCK_RAW), ("AF_VSOCK", 40, socket.SOCK_STREAM), ("AF_NETLINK", 16, socket.SOCK_RAW), ("AF_ALG", 38, socket.SOCK_SEQPACKET),):
    try:
        socket.socket(fam, typ).close()
        print(name + ": created")
    except OSError as e:
        print(name + ":", errno.errorcode.get(e.errno, e.errno))
`
	n := &tunNet{}
	t.Cleanup(func() {
		if n.dev != nil {
			n.dev.Close()
		}
	})
	step := func(name string) sandbox.Step {
		return sandbox.Step{Name: name, Argv: []string{"python3", "-c", probe}}
	}
	r := grun(t, g, sandbox.Spec{Limits: sandbox.Limits{Network: true}, Net: n, Steps: []sandbox.Step{step("compile"), step("run")}})
	wantStatus(t, r, sandbox.StatusOK)
	// Refused with EPERM: this runsc ignores the OCI rule's errnoRet.
	want := "['lo']\n''\nOSError\nAF_PACKET: EPERM\nAF_VSOCK: EAFNOSUPPORT\nAF_NETLINK: created\nAF_ALG: EAFNOSUPPORT\n" +
		"['eth0', 'lo']\n'nameserver 192.0.2.53\\noptions timeout:2 attempts:2\\n'\n192.0.2.10\nAF_PACKET: EPERM\nAF_VSOCK: EPERM\nAF_NETLINK: EPERM\nAF_ALG: EPERM\n"
	if n.attached != 1 || r.Stdout != want {
		t.Fatalf("attached %d times; run saw:\n%s\nwant:\n%s\nstderr: %s", n.attached, r.Stdout, want, r.Stderr)
	}
	gwantClean(t, g)
	// runsc started from a thread in a private mount namespace; whichever
	// thread that was, the process's main thread (/proc/self) is still in
	// the namespace every other thread mounts in (mainthread.go;
	// TestUnitMainThreadReserved).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	main, err1 := os.Readlink("/proc/self/ns/mnt")
	here, err2 := os.Readlink("/proc/thread-self/ns/mnt")
	if err1 != nil || err2 != nil || main != here {
		t.Fatalf("main thread's mount namespace %s, this thread's %s (%v %v)", main, here, err1, err2)
	}
}

func TestGVisorMemoryLimit(t *testing.T) {
	g := gv(t)
	r := grun(t, g, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 128 << 20}, Steps: py("x = []\nwhile True: x.append(bytearray(8 << 20))")})
	wantStatus(t, r, sandbox.StatusMemory)
	if r.ExitCode == 0 || r.MemoryPeak > 140<<20 {
		t.Fatalf("%+v", r.Result)
	}
	gwantClean(t, g)
}

func TestGVisorTimeouts(t *testing.T) {
	g := gv(t)
	start := time.Now()
	r := grun(t, g, sandbox.Spec{Limits: sandbox.Limits{WallTime: 1500 * time.Millisecond}, Steps: sh("sleep 30 & sleep 30")})
	wantStatus(t, r, sandbox.StatusTimeout)
	if d := time.Since(start); d > 5*time.Second || r.Signal != "SIGKILL" {
		t.Fatalf("wall timeout after %v: %+v", d, r.Result)
	}
	r = grun(t, g, sandbox.Spec{Steps: []sandbox.Step{{Name: "compile", Argv: []string{"sleep", "30"}, Timeout: time.Second}, {Name: "run", Argv: []string{"true"}}}})
	wantStatus(t, r, sandbox.StatusTimeout)
	if r.FailedStep != "compile" {
		t.Fatalf("%+v", r.Result)
	}
	r = grun(t, g, sandbox.Spec{Limits: sandbox.Limits{CPUTime: time.Second}, Steps: py("while True: pass")})
	wantStatus(t, r, sandbox.StatusTimeout)
	if r.CPUTime < 900*time.Millisecond {
		t.Fatalf("killed before its CPU limit: %+v", r.Result)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ro, err := gtryRun(t, ctx, g, sandbox.Spec{Steps: sh("sleep 30")})
	if err != nil || ro.Status != sandbox.StatusKilled {
		t.Fatalf("cancel: %v %+v", err, ro.Result)
	}
	gwantClean(t, g)
}

func TestGVisorOutputFlood(t *testing.T) {
	g := gv(t)
	var w sandboxtest.CountingWriter
	dir, release, err := g.NewWorkdir(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	heldWorkdirs.Store(dir, true)
	defer func() { release(); heldWorkdirs.Delete(dir) }()
	start := time.Now()
	res, err := g.Run(context.Background(), sandbox.Spec{Workdir: dir, Env: sandboxtest.BaseEnv, Stdout: &w, Stderr: &w,
		Limits: sandbox.Limits{OutputBytes: 100 << 10, WallTime: 20 * time.Second}, Steps: sh("yes AAAAAAAAAAAAAAAA & yes BBBB >&2")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != sandbox.StatusOutputLimit || w.N != 100<<10 || time.Since(start) > 10*time.Second {
		t.Fatalf("%+v, %d bytes after %v", res, w.N, time.Since(start))
	}
	gwantClean(t, g)
}

// TestGVisorForkBomb counts the processes code can start: the limit (32)
// stops it with EAGAIN. (A bash fork bomb meets its time limit first under
// gVisor, and an unlimited one would too: a timeout shows nothing.)
func TestGVisorForkBomb(t *testing.T) {
	g := gv(t)
	r := grun(t, g, sandbox.Spec{Limits: sandbox.Limits{Pids: 32, WallTime: 20 * time.Second}, Steps: py(`import os, errno, signal
kids = []
try:
    while len(kids) < 500:
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sleep", ["sleep", "600"])
        kids.append(pid)
    print("unlimited", len(kids))
except OSError as e:
    print("stopped", len(kids), errno.errorcode[e.errno])
for k in kids:
    os.kill(k, signal.SIGKILL)
`)})
	var n int
	var why string
	if _, err := fmt.Sscanf(r.Stdout, "stopped %d %s", &n, &why); err != nil || why != "EAGAIN" || n < 16 || n >= 32 {
		t.Fatalf("want fork to fail with EAGAIN below 32 processes: %+v stdout %q stderr %.500q", r.Result, r.Stdout, r.Stderr)
	}
	gwantClean(t, g)
}

func TestGVisorConcurrentAndCleanStart(t *testing.T) {
	g := gv(t)
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ro, err := gtryRun(t, context.Background(), g, sandbox.Spec{Steps: sh(fmt.Sprintf("echo %d > /mnt/data/n; cat /mnt/data/n", i))})
			if err != nil {
				t.Error(err)
			}
			outs[i] = ro.Stdout
		}()
	}
	wg.Wait()
	for i, o := range outs {
		if o != fmt.Sprintf("%d\n", i) {
			t.Fatalf("run %d: %q", i, o)
		}
	}
	gwantClean(t, g)
}

// A sandbox left running by a killed server is removed by the next start.
func TestGVisorCleanOnStart(t *testing.T) {
	gv(t) // skips without runsc
	runDir := testRunDir + "-gvisor-crash"
	defer os.RemoveAll(runDir)
	cfg := Config{Config: host.Config{RunDir: runDir, Slots: 1}}
	g1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		gtryRun(t, ctx, g1, sandbox.Spec{Steps: sh("sleep 60")})
	}()
	// Wait until the sentry runs, then "crash": drop the instance lock
	// without any cleanup.
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(gvisorLeftovers(g1), func(s string) bool { return strings.HasPrefix(s, "process") }) {
		if time.Now().After(deadline) {
			t.Fatal("sandbox never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	instance := g1.base.Instance
	g1.base.Release()
	g2 := sandboxtest.Reclaim(t, instance, func() (*GVisor, int, error) {
		g, err := New(cfg)
		if err != nil {
			return nil, -1, err
		}
		return g, g.base.Instance, nil
	})
	defer g2.Close()
	<-done
	cancel()
	gwantClean(t, g2)
	r := grun(t, g2, sandbox.Spec{Steps: sh("echo ok")})
	wantStatus(t, r, sandbox.StatusOK)
}
