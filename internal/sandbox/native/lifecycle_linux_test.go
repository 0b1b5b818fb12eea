//go:build linux

package native

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"golang.org/x/sys/unix"
)

func TestCompileThenRun(t *testing.T) {
	s := sb(t)
	r := run(t, s, sandbox.Spec{
		Files: []sandbox.File{{Path: "/tmp/src/main.c", Data: []byte("#include <stdio.h>\nint main(void){puts(\"compiled\");return 0;}\n")}},
		Steps: []sandbox.Step{
			{Name: "compile", Argv: []string{"gcc", "-o", "/tmp/prog", "/tmp/src/main.c"}, Timeout: 20 * time.Second},
			{Name: "run", Argv: []string{"/tmp/prog"}},
		},
		Limits: sandbox.Limits{WallTime: 25 * time.Second},
	})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "compiled\n" {
		t.Fatalf("stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	r = run(t, s, sandbox.Spec{Steps: []sandbox.Step{
		{Name: "compile", Argv: []string{"/bin/false"}},
		{Name: "run", Argv: []string{"echo", "must not run"}},
	}})
	wantStatus(t, r, sandbox.StatusError)
	if r.FailedStep != "compile" || r.Stdout != "" {
		t.Fatalf("%+v", r)
	}
	r = run(t, s, sandbox.Spec{Steps: []sandbox.Step{{Name: "run", Argv: []string{"no-such-binary"}}}})
	if r.Status != sandbox.StatusError || r.ExitCode != 127 || !strings.Contains(r.Stderr, "command not found") {
		t.Fatalf("%+v", r)
	}
}

func TestDescribe(t *testing.T) {
	s := sb(t)
	d := s.Describe()
	if d.Backend != "linux" || !d.UserNS || d.UIDSpan != host.IDRange || d.UIDBase != s.HostID(0) || d.Slots != 4 ||
		d.Instance != s.Instance || d.Warm != nil || d.Degraded || d.Cgroup.Version == 0 || d.Cgroup.Path == "" {
		t.Errorf("Describe: %+v", d)
	}
	// /health and the console show it as JSON under these keys.
	b, _ := json.Marshal(d)
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"backend", "userns", "uid_map", "uid_base", "cgroup", "seccomp", "network", "rootfs", "slots"} {
		if _, ok := m[k]; !ok {
			t.Errorf("the JSON report lacks %q: %s", k, b)
		}
	}
}

// TestRootFS: with RootFS set, /usr and /etc come from that tree (and /etc
// still only through the allowlist).
func TestRootFS(t *testing.T) {
	sb(t)
	root := fmt.Sprintf("/run/codeexec-test-rootfs-%d", os.Getpid())
	if err := os.MkdirAll(filepath.Join(root, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	if err := unix.Mount("/usr", filepath.Join(root, "usr"), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(root, "usr"), unix.MNT_DETACH)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=custom-rootfs\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/shadow"), []byte("secret"), 0o644)
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if _, err := os.Lstat("/" + l); err == nil {
			os.Symlink("usr/"+l, filepath.Join(root, l))
		}
	}
	s, err := New(host.Config{RunDir: testRunDir + "-rootfs", Slots: 1, RootFS: root})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(testRunDir + "-rootfs")
	}()
	r := run(t, s, sandbox.Spec{Steps: sh("cat /etc/os-release; ls /etc/shadow 2>&1 | grep -c 'No such'")})
	wantStatus(t, r, sandbox.StatusOK)
	if r.Stdout != "ID=custom-rootfs\n1\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
}

func TestTwoInstances(t *testing.T) {
	a := sb(t)
	b, err := New(host.Config{RunDir: testRunDir + "-b", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		b.Close()
		os.RemoveAll(testRunDir + "-b")
	}()
	if a.Instance == b.Instance {
		t.Fatalf("both instances got K=%d", a.Instance)
	}
	alo, ahi := instanceUIDs(a)
	blo, bhi := instanceUIDs(b)
	if alo < bhi && blo < ahi {
		t.Fatalf("uid ranges overlap: [%d,%d) [%d,%d)", alo, ahi, blo, bhi)
	}
	r := run(t, b, sandbox.Spec{Steps: sh("echo b")})
	wantStatus(t, r, sandbox.StatusOK)
}

// TestCrashedPredecessorCleaned leaves what a kill -9'd server of instance
// K would (a workdir mount, a cgroup with a live process, a process running
// as one of K's uids) and checks that the next New taking K removes it.
func TestCrashedPredecessorCleaned(t *testing.T) {
	sb(t) // the shared instance keeps its own K out of the way
	runDir := testRunDir + "-crash"
	defer os.RemoveAll(runDir)
	first, err := New(host.Config{RunDir: runDir, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	k := first.Instance
	lo, hi := first.InstanceRange(k), first.InstanceRange(k+1)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	stale := filepath.Join(runDir, fmt.Sprintf("i%d", k), "w99")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("codeexec-i%d", k), stale, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	var cgDirs []string
	for _, c := range []string{"memory", "pids"} {
		d := fmt.Sprintf("/sys/fs/cgroup/%s/codeexec/%d/s0", c, k)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		cgDirs = append(cgDirs, d)
	}
	inCg := exec.Command("/bin/sleep", "1000")
	if err := inCg.Start(); err != nil {
		t.Fatal(err)
	}
	for _, d := range cgDirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(inCg.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	asUID := exec.Command("/bin/sleep", "1000")
	asUID.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: lo + 5, Gid: lo + 5}}
	if err := asUID.Start(); err != nil {
		t.Fatal(err)
	}

	second := sandboxtest.Reclaim(t, k, func() (*Linux, int, error) {
		l, err := New(host.Config{RunDir: runDir, Slots: 1})
		if err != nil {
			return nil, -1, err
		}
		return l, l.Instance, nil
	})
	defer second.Close()
	for _, c := range []*exec.Cmd{inCg, asUID} {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			c.Process.Kill()
			t.Fatalf("leftover process %d survived", c.Process.Pid)
		}
	}
	if left := host.ProcsInRange(lo, hi); len(left) > 0 {
		t.Fatalf("processes in K's uid range: %v", left)
	}
	for _, d := range cgDirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("stale cgroup %s still there: %v", d, err)
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), stale) {
		t.Fatal("stale workdir mount still there")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale workdir dir still there: %v", err)
	}
	r := run(t, second, sandbox.Spec{Steps: sh("echo fresh")})
	wantStatus(t, r, sandbox.StatusOK)
}
