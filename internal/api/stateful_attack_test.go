package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
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

// gvisorSessionProc waits for a host process of the gVisor server's only
// live sandbox (its sentry, gofer or a stub), found by its cgroup.
func (e *env) gvisorSessionProc() int {
	e.t.Helper()
	base := e.box.Describe().Cgroup.Path
	deadline := time.Now().Add(10 * time.Second)
	for {
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			b, _ := os.ReadFile(d + "/cgroup")
			if bytes.Contains(b, []byte(":"+base+"/s")) {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no host process in a cgroup under %s", base)
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
	if !onBackends(t, cold, warm, gvisor) {
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
	var pid int
	if testBackend() == gvisor {
		// The loop is a task of the sentry, not a host process: the host
		// accounts it to the session's cgroup, where the sentry is.
		pid = e.gvisorSessionProc()
	} else {
		pid = procWith(t, marker)
	}
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

// TestStatefulCallHoldsAnExecutionSlot: a stateful call is admitted like a
// one-shot run and holds its slot until it returns (on /exec and on
// /v1/sessions/{id}/execute); between calls the frozen session holds none.
func TestStatefulCallHoldsAnExecutionSlot(t *testing.T) {
	e := newEnv(t)
	e.withRuntime(runtime.Config{})
	adm := admission.New(1, 0, time.Second)
	e.server().Admission = adm
	v1 := decode[v1Session](t, e.post("/v1/sessions", `{"language":"python","stateful":true}`), http.StatusCreated)
	for _, c := range []struct {
		name string
		call func(code string) string
	}{{"/exec", func(code string) string {
		return e.live("slot", map[string]any{"lang": "py", "code": code}).Stdout
	}}, {"/v1", func(code string) string {
		body, _ := json.Marshal(map[string]string{"code": code})
		return decode[v1Exec](t, e.post("/v1/sessions/"+v1.SessionID+"/execute", string(body)), 200).Stdout
	}}} {
		if out := c.call("x = 1\nprint(x)"); out != "1\n" {
			t.Fatalf("%s: %q", c.name, out)
		}
		if n := adm.Stats().Running; n != 0 {
			t.Fatalf("%s: %d executions running between calls", c.name, n)
		}
		done := make(chan string, 1)
		go func() { done <- c.call("import time\ntime.sleep(3)\nprint(x + 1)") }()
		until(t, 20*time.Second, c.name+": the stateful call never took a slot", func() bool { return adm.Stats().Running == 1 })
		got := decode[map[string]any](t, e.post("/exec", map[string]any{"lang": "py", "code": "print('one-shot')"}), http.StatusTooManyRequests)
		if msg, _ := got["message"].(string); !strings.HasPrefix(msg, "Too many executions in progress (execution queue is full)") {
			t.Fatalf("%s: one-shot run during a stateful call: %v", c.name, got)
		}
		if out := <-done; out != "2\n" {
			t.Fatalf("%s: the long call: %q", c.name, out)
		}
		until(t, 5*time.Second, c.name+": the slot was not given back", func() bool { return adm.Stats().Running == 0 })
	}
}

// TestAttackStatefulEvictionQuota: a caller opening session after session
// evicts its own least recently used ones, never another caller's; a
// session in a call is never evicted: with nothing evictable the answer
// is 429, and the call completes.
func TestAttackStatefulEvictionQuota(t *testing.T) {
	e := newEnv(t)
	// Room for 4 on the server, 2 per caller: without the quota mallory
	// would hold 3.
	m := e.withRuntime(runtime.Config{MaxSessions: 4, PerCaller: 2})
	as := func(user, hint, code string) execResult {
		return e.live(hint, map[string]any{"lang": "py", "code": code, "user_id": user})
	}
	as("victim", "v", "secret = 'kept'")
	for i := range 6 {
		if r := as("mallory", fmt.Sprint("m", i), "pass"); r.RuntimeStatus != "new" || r.Status != "ok" {
			t.Fatalf("mallory's session %d: %+v", i, r)
		}
	}
	if n := m.Len(); n != 3 {
		t.Fatalf("%d live sessions, want 3 (the victim's and mallory's 2)", n)
	}
	if r := as("victim", "v", "print(secret)"); r.Stdout != "kept\n" || r.RuntimeStatus != "reused" {
		t.Fatalf("another caller's sessions evicted the victim's: %+v", r)
	}
	// mallory's oldest were its own to lose: m0..m3 are gone, m5 lives.
	if r := as("mallory", "m5", "print('live')"); r.RuntimeStatus != "reused" {
		t.Fatalf("mallory's newest session: %+v", r)
	}
	if r := as("mallory", "m0", "pass"); r.RuntimeStatus != "new" {
		t.Fatalf("mallory's oldest session survived its own quota: %+v", r)
	}

	// Mid-call: one session per caller, one on the server.
	m2 := e.withRuntime(runtime.Config{MaxSessions: 1, PerCaller: 1})
	done := make(chan execResult, 1)
	go func() {
		done <- e.live("long", map[string]any{"lang": "py", "user_id": "alice", "code": "import time\ntime.sleep(4)\nprint('finished')"})
	}()
	until(t, 30*time.Second, "the long call never started", func() bool { return m2.Len() == 1 })
	for _, user := range []string{"alice", "bob"} {
		resp := e.post("/exec", map[string]any{"lang": "py", "code": "pass", "user_id": user, "runtime_session_hint": "other"},
			"X-CodeAPI-Expected-Profile", "stateful")
		got := decode[map[string]any](t, resp, http.StatusTooManyRequests)
		want := "all 1 live sessions of the server are in a call"
		if user == "alice" {
			want = "all 1 of this caller's live sessions are in a call"
		}
		if msg, _ := got["message"].(string); !strings.Contains(msg, want) || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: a new session while the only one is in a call: %v", user, got)
		}
	}
	if r := <-done; r.Stdout != "finished\n" || r.Status != "ok" {
		t.Fatalf("the call was disturbed: %+v", r)
	}
	// Idle now: bob, within his quota, may take the server's only place.
	if r := e.live("other", map[string]any{"lang": "py", "code": "print(2)", "user_id": "bob"}); r.Stdout != "2\n" || r.RuntimeStatus != "new" {
		t.Fatalf("bob after the call: %+v", r)
	}
}

// TestAttackCgroupPathsHidden: the code cannot learn the host's cgroup
// layout from /proc: a native run (cold and warm) has a cgroup namespace of
// its own, rooted at its cgroup; gVisor's /proc/self/cgroup is empty (its
// sentry mounts no cgroupfs for the code) and it has no cgroup namespace
// file at all.
func TestAttackCgroupPathsHidden(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.exec(map[string]any{"lang": "bash", "code": "cat /proc/self/cgroup /proc/1/cgroup; echo ns=$(readlink /proc/self/ns/cgroup 2>/dev/null)"})
	assertOK(t, r)
	t.Logf("%s: %q", testBackend(), r.Stdout)
	host, _ := os.Readlink("/proc/self/ns/cgroup")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	ns, _ := strings.CutPrefix(lines[len(lines)-1], "ns=")
	for _, l := range lines[:len(lines)-1] {
		if strings.Contains(l, "codeexec") || !strings.HasSuffix(l, ":/") {
			t.Errorf("the code sees the cgroup line %q, want / (no host path)", l)
		}
	}
	if testBackend() == gvisor {
		if len(lines) != 1 || ns != "" {
			t.Errorf("gVisor: %q, want an empty /proc/self/cgroup and no cgroup namespace file", r.Stdout)
		}
		return
	}
	if len(lines) < 3 || !strings.HasPrefix(ns, "cgroup:[") || ns == host {
		t.Errorf("the run's cgroup namespace %q (the server's %s): want one of its own", ns, host)
	}
}
