package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// containerCgroup is a cgroup v1 hierarchy of this test's own (memory,
// pids, cpu, cpuacct), below this process's cgroups, with a memory limit:
// what a container gets.
type containerCgroup struct {
	dirs map[string]string // by controller
}

func newContainerCgroup(t *testing.T, limit int64) *containerCgroup {
	t.Helper()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(self)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	cg := &containerCgroup{dirs: map[string]string{}}
	name := fmt.Sprintf("codeexec-budget-test-%d", os.Getpid())
	for _, c := range []string{"memory", "pids", "cpu", "cpuacct"} {
		if own[c] == "" {
			t.Skipf("no cgroup v1 %s controller (this test builds a v1 container cgroup)", c)
		}
		dir := filepath.Join("/sys/fs/cgroup", c, own[c], name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cg.dirs[c] = dir
	}
	t.Cleanup(cg.remove)
	if err := os.WriteFile(filepath.Join(cg.dirs["memory"], "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		t.Fatal(err)
	}
	// With swap accounting, a container's limit bounds memory+swap too.
	if _, err := os.Stat(filepath.Join(cg.dirs["memory"], "memory.memsw.limit_in_bytes")); err == nil {
		os.WriteFile(filepath.Join(cg.dirs["memory"], "memory.memsw.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0)
	}
	return cg
}

// remove kills what is left inside (depth first) and removes the cgroups.
func (cg *containerCgroup) remove() {
	for _, dir := range cg.dirs {
		var all []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				procs, _ := os.ReadFile(filepath.Join(all[i], "cgroup.procs"))
				for _, p := range strings.Fields(string(procs)) {
					if pid, err := strconv.Atoi(p); err == nil {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				if os.Remove(all[i]) == nil {
					break
				}
			}
		}
	}
}

// value reads one number of the container's memory cgroup.
func (cg *containerCgroup) value(t *testing.T, file, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg.dirs["memory"], file))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if key != "" {
		for _, line := range strings.Split(s, "\n") {
			if v, ok := strings.CutPrefix(line, key+" "); ok {
				s = v
			}
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s %s: %q", file, key, b)
	}
	return n
}

func rssOf(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestMemoryBudgetHolds runs the real server as a container would: inside
// a 1.5 GiB memory cgroup (its own cgroup namespace, the cgroup filesystems
// mounted afresh, so its sandboxes' cgroups nest inside), with the budget
// read from that cgroup. Idle stateful sessions holding most of their limit
// and more concurrent runs than fit, each also filling most of its limit,
// must not get anything outside a sandbox OOM-killed: the container's
// cgroup never hits its limit, the server keeps its pid and answers, the
// warm templates stay; runs beyond the budget wait or get a 429 that says
// why; a run over its own limit is killed inside its sandbox only.
func TestMemoryBudgetHolds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (cgroups, namespaces)")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("needs the cgroup v1 memory controller")
	}
	const limit = 1536 << 20
	cg := newContainerCgroup(t, limit)

	runDir, _ := os.MkdirTemp("", "codeexec-run-")
	os.Chmod(runDir, 0o711)
	defer os.RemoveAll(runDir)
	const key = "k-budget-test-key-0123"
	// The shell enters the container's cgroups, then a new cgroup and
	// mount namespace where the cgroup filesystems show only them.
	var enter, mounts []string
	for _, c := range []string{"memory", "pids", "cpu", "cpuacct"} {
		enter = append(enter, fmt.Sprintf("echo $$ > %s/cgroup.procs", cg.dirs[c]))
		mounts = append(mounts, fmt.Sprintf("umount /sys/fs/cgroup/%s && mount -t cgroup -o %s cgroup /sys/fs/cgroup/%s", c, c, c))
	}
	script := strings.Join(enter, " && ") + ` && exec unshare --cgroup --mount --propagation private sh -c '` +
		strings.Join(mounts, " && ") + ` && exec "$0" serve' ` + filepath.Join(binDir, "codeexec")
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "CODEEXEC_PORT=0", "CODEEXEC_API_KEY=" + key,
		"CODEEXEC_STORAGE_DIR=" + t.TempDir(), "CODEEXEC_RUN_DIR=" + runDir,
		// Apart from other tests' sandboxes on this host.
		"CODEEXEC_UID_BASE=0x60000000",
		"CODEEXEC_MAX_MEMORY_MB=256", "CODEEXEC_MAX_CONCURRENCY=8", "CODEEXEC_MAX_RUNTIME_SESSIONS=8",
		"CODEEXEC_QUEUE_TIMEOUT_SECONDS=4", "CODEEXEC_MAX_QUEUE=64"}
	var logMu sync.Mutex
	var logBuf strings.Builder
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.Write(p)
	})
	serverLog := func() string { logMu.Lock(); defer logMu.Unlock(); return logBuf.String() }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	gone := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(gone) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("server log:\n%s", serverLog())
		}
	}()
	pid := cmd.Process.Pid
	url := "http://" + listenAddr(t, serverLog, "listening", gone)

	request := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	type health struct {
		Isolation struct {
			Warm struct {
				Python struct{ Templates, Ready int }
			}
		}
		MemoryBudget struct {
			Total     int64 `json:"total_bytes"`
			Available int64 `json:"available_bytes"`
			Used      int64 `json:"used_bytes"`
			Warm      int64 `json:"warm_bytes"`
			Sessions  int64 `json:"sessions_bytes"`
		} `json:"memory_budget"`
	}
	getHealth := func() (health, error) {
		code, b := request("GET", "/health", "")
		var h health
		if code != 200 {
			return h, fmt.Errorf("health: %d %s", code, b)
		}
		return h, json.Unmarshal(b, &h)
	}
	var h health
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if h, err = getHealth(); err == nil && h.Isolation.Warm.Python.Ready == h.Isolation.Warm.Python.Templates {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v %+v", err, h)
		}
	}
	// The budget is the container's limit, less the default reserve; the
	// default pool (one slot per CPU) is shrunk to a quarter of it.
	if h.MemoryBudget.Total != limit || h.MemoryBudget.Available != limit-256<<20 {
		t.Fatalf("budget not read from the cgroup: %+v", h.MemoryBudget)
	}
	templates := h.Isolation.Warm.Python.Templates
	if h.MemoryBudget.Warm != int64(templates/3)*warmSlotBytes || templates == 0 {
		t.Fatalf("warm share %d for %d templates", h.MemoryBudget.Warm, templates)
	}
	// The default pool is one slot per concurrent run (8 here).
	if !strings.Contains(serverLog(), `"msg":"warm pool shrunk to fit the memory budget","configured":8,"size":`+strconv.Itoa(templates/3)+",") {
		t.Errorf("the pool was shrunk to %d slots without saying so", templates/3)
	}
	if code, b := request("GET", "/metrics", ""); code != 200 || !strings.Contains(string(b), "\ncodeexec_memory_budget_bytes "+strconv.FormatFloat(float64(h.MemoryBudget.Available), 'g', -1, 64)+"\n") ||
		!strings.Contains(string(b), `codeexec_memory_budget_held_bytes{kind="warm"} `+strconv.FormatFloat(float64(h.MemoryBudget.Warm), 'g', -1, 64)) {
		t.Errorf("/metrics lacks the budget: %d", code)
	}
	share := int64(256 << 20)
	fits := int((h.MemoryBudget.Available - h.MemoryBudget.Warm) / share)
	baseline := cg.value(t, "memory.usage_in_bytes", "")
	// At rest the server and its templates stay within what the budget
	// sets aside for them (the reserve and the warm share).
	if baseline > h.MemoryBudget.Total-h.MemoryBudget.Available+h.MemoryBudget.Warm {
		t.Errorf("at rest the container uses %d MiB, more than the reserve and warm share (%d MiB)", baseline>>20,
			(h.MemoryBudget.Total-h.MemoryBudget.Available+h.MemoryBudget.Warm)>>20)
	}
	t.Logf("budget %d MiB, available %d MiB, warm %d MiB (%d templates), %d executions fit; container usage at rest %d MiB, server RSS %d MiB",
		h.MemoryBudget.Total>>20, h.MemoryBudget.Available>>20, h.MemoryBudget.Warm>>20, templates, fits, baseline>>20, rssOf(pid)>>20)

	// Sample the container's usage and the server's RSS throughout.
	stop := make(chan struct{})
	var peakRSS int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peakRSS = max(peakRSS, rssOf(pid))
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	// Idle stateful sessions fill the budget, each holding 200 MiB.
	hold := `import time
x = bytearray(200 << 20)
for i in range(0, len(x), 4096):
    x[i] = 1
print("holding")`
	for i := range fits {
		body := fmt.Sprintf(`{"lang":"py","code":%q,"runtime_session_hint":"conv-%d"}`, hold, i)
		req, _ := http.NewRequest("POST", url+"/exec", strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CodeAPI-Expected-Profile", "stateful")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"stdout":"holding\n"`) {
			t.Fatalf("session %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if h, _ = getHealth(); h.MemoryBudget.Sessions != int64(fits)*share {
		t.Fatalf("sessions hold %d, want %d", h.MemoryBudget.Sessions, int64(fits)*share)
	}
	full := cg.value(t, "memory.usage_in_bytes", "")
	t.Logf("%d idle sessions: container usage %d MiB", fits, full>>20)

	// Twice as many concurrent runs as fit, each filling 220 MiB for a
	// while, and one run that goes over its own limit.
	fill := `x = bytearray(220 << 20)
for i in range(0, len(x), 4096):
    x[i] = 1
import time
time.sleep(1.5)
print("filled")`
	type answer struct {
		code int
		body string
	}
	n := 2 * fits
	answers := make(chan answer, n)
	for range n {
		go func() {
			code, b := request("POST", "/exec", fmt.Sprintf(`{"lang":"py","code":%q}`, fill))
			answers <- answer{code, string(b)}
		}()
	}
	ok, refused := 0, 0
	for range n {
		a := <-answers
		switch {
		case a.code == 200 && strings.Contains(a.body, `"stdout":"filled\n"`):
			ok++
		case a.code == 429 && strings.Contains(a.body, "the server's memory budget is fully committed"):
			refused++
		default:
			t.Errorf("run: %d %s", a.code, a.body)
		}
	}
	// A run over its own limit is killed inside its sandbox, nothing else.
	if code, b := request("POST", "/exec", `{"lang":"py","code":"x = bytearray(400 << 20)\nprint('no')"}`); code != 200 || !strings.Contains(string(b), `"status":"memory"`) {
		t.Errorf("run over its own limit: %d %s", code, b)
	}
	close(stop)
	<-sampled
	peak := cg.value(t, "memory.max_usage_in_bytes", "")
	t.Logf("runs: %d ok, %d refused (memory budget); peak container usage (server + templates + sandboxes) %d MiB of %d MiB budget; peak server RSS %d MiB",
		ok, refused, peak>>20, int64(limit)>>20, peakRSS>>20)
	if ok < fits {
		t.Errorf("only %d runs succeeded; %d fit at once", ok, fits)
	}

	// Nothing outside a sandbox was OOM-killed: the container's own cgroup
	// never ran out, the server is the same process and answers, the warm
	// templates are all alive.
	if kills := cg.value(t, "memory.oom_control", "oom_kill"); kills != 0 {
		t.Errorf("the container's cgroup OOM-killed %d processes", kills)
	}
	if fails := cg.value(t, "memory.failcnt", ""); fails != 0 {
		t.Errorf("the container's cgroup hit its limit %d times", fails)
	}
	select {
	case err := <-exited:
		t.Fatalf("server exited: %v", err)
	default:
	}
	h2, err := getHealth()
	if err != nil || h2.Isolation.Warm.Python.Ready != templates {
		t.Fatalf("after the load: %v %+v", err, h2)
	}
	if strings.Contains(serverLog(), "warm template restarting") {
		t.Errorf("a warm template died:\n%s", serverLog())
	}
	if peak > limit {
		t.Errorf("peak %d over the limit %d", peak, int64(limit))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
