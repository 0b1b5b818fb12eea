package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The guest tests run inside the VM (the guest's init sets
// CODEEXEC_VM_GUEST=1), with the server binary and the image's entrypoint
// where the container image has them.

const (
	guestServer     = "/usr/local/bin/codeexec"
	guestEntrypoint = "/usr/local/bin/codeexec-entrypoint"
	busybox         = "/vm/busybox"
)

func guestOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("CODEEXEC_VM_GUEST") != "1" {
		t.Skip("runs inside the cgroup v2 VM (TestCgroupV2VM)")
	}
}

// container starts script as a container runtime would on a cgroup v2
// host: in a cgroup of its own ("ctr"), in a private cgroup namespace
// rooted there, with cgroup2 mounted read-only at /sys/fs/cgroup.
func container(t *testing.T, name, script string, env ...string) *exec.Cmd {
	t.Helper()
	ctr := filepath.Join("/sys/fs/cgroup", name)
	if err := os.Mkdir(ctr, 0o755); err != nil {
		t.Fatal(err)
	}
	inner := busybox + " umount /sys/fs/cgroup && " + busybox + " mount -t cgroup2 -o ro cgroup2 /sys/fs/cgroup && " + script
	// Like runc: the container's first process alone in its cgroup
	// (unshare without --fork leaves no parent behind).
	cmd := exec.Command("/bin/sh", "-c", `echo $$ > `+ctr+`/cgroup.procs && exec unshare --cgroup --mount --propagation private /bin/sh -c "$0"`, inner)
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "CODEEXEC_API_KEY=k", "CODEEXEC_STORAGE_DIR=" + t.TempDir(),
		"CODEEXEC_ENTRYPOINT_PROC=0"}, env...)
	t.Cleanup(func() {
		// Everything of the container, then its cgroups, leaves first.
		_ = os.WriteFile(filepath.Join(ctr, "cgroup.kill"), []byte("1"), 0)
		// (The tests wait for cmd themselves; the rmdirs below wait
		// for the cgroups to empty.)
		var dirs []string
		_ = filepath.WalkDir(ctr, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for j := 0; j < 100 && syscall.Rmdir(dirs[i]) == syscall.EBUSY; j++ {
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	return cmd
}

// lockedBuffer is a bytes.Buffer that a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// client bounds every request: under TCG a run takes seconds, never minutes.
var client = &http.Client{Timeout: 3 * time.Minute}

// cgroupDump lists the cgroups under dir with their processes' names and
// enabled controllers, for failure messages.
func cgroupDump(dir string) string {
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		sub, _ := os.ReadFile(filepath.Join(p, "cgroup.subtree_control"))
		var comms []string
		for _, pid := range strings.Fields(string(procs)) {
			c, _ := os.ReadFile("/proc/" + pid + "/comm")
			comms = append(comms, pid+":"+strings.TrimSpace(string(c)))
		}
		fmt.Fprintf(&b, "\n  %s procs=%v subtree_control=%q", p, comms, strings.TrimSpace(string(sub)))
		return nil
	})
	return b.String()
}

// runDir makes a run directory whose ancestors the sandbox's unprivileged
// init can traverse (t.TempDir's parent is 0700).
func runDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "codeexec-run-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func request(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("X-API-Key", "k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestGuestEntrypoint: the image's entrypoint on a cgroup v2 Docker host
// makes the container's cgroup usable (read-write, its processes in a
// leaf, controllers delegated) and the server then limits and measures
// every run inside the container's cgroup.
func TestGuestEntrypoint(t *testing.T) {
	guestOnly(t)
	port := freePort(t)
	cmd := container(t, "ctr-entrypoint", "exec "+guestEntrypoint+" serve",
		// No warm pool: it takes minutes to start under TCG, and the warm
		// path's cgroups have tests of their own.
		"CODEEXEC_PORT="+port, "CODEEXEC_MAX_MEMORY_MB=256", "CODEEXEC_POOL_PYTHON=0", "CODEEXEC_RUN_DIR="+runDir(t))
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	url := "http://127.0.0.1:" + port
	deadline := time.Now().Add(3 * time.Minute)
	poll := &http.Client{Timeout: 10 * time.Second}
	for next := time.Now(); ; {
		resp, err := poll.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		gone := false
		select {
		case <-exited:
			gone = true
		default:
		}
		if gone || time.Now().After(deadline) {
			t.Fatalf("server behind the entrypoint did not start: %v\n%s\ncgroups: %s", err, logs.String(), cgroupDump("/sys/fs/cgroup/ctr-entrypoint"))
		}
		if time.Now().After(next) {
			t.Logf("waiting for the server: %v", err)
			next = time.Now().Add(20 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, b := request(t, "GET", url+"/health", "")
	var h struct {
		Isolation struct {
			Cgroup struct {
				Version     int      `json:"version"`
				Controllers []string `json:"controllers"`
			} `json:"cgroup"`
		} `json:"isolation"`
	}
	if code != 200 || json.Unmarshal(b, &h) != nil {
		t.Fatalf("health: %d %s", code, b)
	}
	t.Logf("health cgroup: %+v", h.Isolation.Cgroup)
	if cg := h.Isolation.Cgroup; cg.Version != 2 || !slices.Contains(cg.Controllers, "memory") || !slices.Contains(cg.Controllers, "pids") || !slices.Contains(cg.Controllers, "cpu") {
		t.Errorf("health reports cgroup %+v, want version 2 with cpu, memory and pids", cg)
	}
	if !strings.Contains(logs.String(), "cgroup v2: delegated") {
		t.Errorf("entrypoint log:\n%s", logs.String())
	}
	// The run's cgroup, as the code sees it: the root of its own cgroup
	// namespace, no path of the container's or the host's.
	code, b = request(t, "POST", url+"/exec", `{"lang":"bash","code":"cat /proc/self/cgroup"}`)
	var res struct {
		Stdout, Status  string
		MemoryPeakBytes int64 `json:"memory_peak_bytes"`
	}
	if code != 200 || json.Unmarshal(b, &res) != nil || res.Stdout != "0::/\n" || res.Status != "ok" {
		t.Fatalf("exec cat /proc/self/cgroup: %d %s", code, b)
	}
	t.Logf("in the container, a run's /proc/self/cgroup: %q", res.Stdout)
	if left, _ := filepath.Glob("/sys/fs/cgroup/ctr-entrypoint/codeexec/*/s*"); len(left) > 0 {
		t.Errorf("run cgroups still there after the run: %v", left)
	}
	code, b = request(t, "POST", url+"/exec", `{"lang":"py","code":"x = bytearray(2 << 30)","timeout":120000}`)
	if code != 200 || json.Unmarshal(b, &res) != nil || res.Status != "memory" || res.MemoryPeakBytes < 200<<20 {
		t.Fatalf("memory bomb in the container: %d %s", code, b)
	}
	t.Logf("memory bomb in the container: status %s, peak %d", res.Status, res.MemoryPeakBytes)
}

// TestGuestServeRefusesUndelegated: without the entrypoint, in a v2
// container whose cgroup holds the server itself, no controller can be
// handed to per-run cgroups; serve must refuse, naming the fix.
func TestGuestServeRefusesUndelegated(t *testing.T) {
	guestOnly(t)
	cmd := container(t, "ctr-bare", busybox+" mount -o remount,rw /sys/fs/cgroup && exec "+guestServer+" serve",
		"CODEEXEC_PORT="+freePort(t), "CODEEXEC_POOL_PYTHON=0", "CODEEXEC_RUN_DIR="+runDir(t))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("serve started in a container that delegates no controller")
	}
	t.Logf("serve: %v\n%s", err, out)
	if err == nil || !strings.Contains(string(out), "move them into a leaf") || !strings.Contains(string(out), "entrypoint") {
		t.Fatalf("serve did not refuse with the fix: %v\n%s", err, out)
	}
}
