package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/metrics"
	"github.com/codeexec/codeexec/internal/runtime"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// withRuntime gives the env's server a stateful runtime.
func (e *env) withRuntime(cfg runtime.Config) *runtime.Manager {
	s := e.srv.Config.Handler.(*Server)
	m := runtime.New(s.Engine, cfg)
	s.Runtime = m
	e.t.Cleanup(m.Close)
	return m
}

// live sends a stateful-profile /exec.
func (e *env) live(hint string, body map[string]any, headers ...string) execResult {
	e.t.Helper()
	body["runtime_session_hint"] = hint
	resp := e.post("/exec", body, append([]string{"X-CodeAPI-Expected-Profile", "stateful"}, headers...)...)
	if p := resp.Header.Get("X-CodeAPI-Execution-Profile"); p != "stateful" {
		e.t.Fatalf("profile header %q", p)
	}
	return decode[execResult](e.t, resp, http.StatusOK)
}

func TestStatefulVariablesImportsAndData(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MemoryBytes = 1 << 30 })
	e.withRuntime(runtime.Config{})
	up := decode[uploadResult](t, e.upload("/upload", map[string]string{"kind": "user", "id": "u1"}, part{"file", "sales.csv", []byte("region,amount\nnorth,10\nsouth,32\n")}), 200)
	ref := map[string]any{"id": up.Files[0].FileID, "storage_session_id": up.StorageSessionID, "name": "sales.csv", "kind": "user"}

	r1 := e.live("conv-1", map[string]any{"lang": "py", "files": []any{ref}, "code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\nx = 41\nprint('loaded')"})
	if r1.Stdout != "loaded\n" || r1.RuntimeStatus != "new" || r1.RuntimeSessionID == "" || r1.Status != "ok" {
		t.Fatalf("call 1: %+v", r1)
	}
	r2 := e.live("conv-1", map[string]any{"lang": "py", "files": []any{ref}, "code": "import sys\nprint(x + 1, int(df['amount'].sum()), 'pandas' in sys.modules)"})
	if r2.Stdout != "42 42 True\n" || r2.RuntimeStatus != "reused" || r2.RuntimeSessionID != r1.RuntimeSessionID {
		t.Fatalf("call 2: %+v", r2)
	}
	// Errors come back as for a one-shot run, and the state survives them.
	r3 := e.live("conv-1", map[string]any{"lang": "py", "code": "x += 1\nraise ValueError('boom')"})
	if r3.Status != "error" || r3.ExitCode != 1 || !strings.Contains(r3.Stderr, "ValueError: boom") || !strings.Contains(r3.Stderr, "Traceback") {
		t.Fatalf("call 3: %+v", r3)
	}
	// Files: a figure saved by the code comes back like any output.
	r4 := e.live("conv-1", map[string]any{"lang": "py", "code": "import matplotlib.pyplot as plt\nplt.plot([1,2],[3,4])\nplt.savefig('fig.png')\nprint(x)"})
	if r4.Stdout != "42\n" || fileNamed(r4.Files, "fig.png") == nil || fileNamed(r4.Files, "fig.png").Inherited {
		t.Fatalf("call 4: %+v", r4)
	}
	// bash runs inside the same session, with its files.
	r5 := e.live("conv-1", map[string]any{"lang": "bash", "code": "ls; echo $1", "args": []string{"arg"}})
	if r5.Stdout != "fig.png\nsales.csv\narg\n" || r5.RuntimeStatus != "reused" {
		t.Fatalf("call 5: %+v", r5)
	}
}

func TestStatefulInterruptKeepsState(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	e := newEnv(t)
	e.withRuntime(runtime.Config{})
	e.live("h", map[string]any{"lang": "py", "code": "y = 7"})
	start := time.Now()
	r := e.live("h", map[string]any{"lang": "py", "code": "while True:\n    pass", "timeout": 1000})
	if r.Status != "timeout" || time.Since(start) > 8*time.Second {
		t.Fatalf("loop: %+v after %v", r, time.Since(start))
	}
	r = e.live("h", map[string]any{"lang": "py", "code": "print(y)"})
	if r.Stdout != "7\n" || r.RuntimeStatus != "reused" {
		t.Fatalf("after interrupt: %+v", r)
	}
	// Code that ignores the interrupt costs its session, not the server.
	r = e.live("h", map[string]any{"lang": "py", "code": "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass", "timeout": 1000})
	if r.Status != "timeout" {
		t.Fatalf("stubborn loop: %+v", r)
	}
	r = e.live("h", map[string]any{"lang": "py", "code": "print('y' in dir())"})
	if r.Stdout != "False\n" || r.RuntimeStatus != "new" {
		t.Fatalf("after a killed session: %+v", r)
	}
	e.srv.Config.Handler.(*Server).Runtime.Close()
	e.assertClean()
}

func TestStatefulScopedToCaller(t *testing.T) {
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) { a.Keys = append(a.Keys, "second-key") })
	e.withRuntime(runtime.Config{})
	e.live("same-hint", map[string]any{"lang": "py", "code": "secret = 'alice'", "user_id": "alice"})
	// Same key and hint, another LibreChat user; then another API key.
	for _, c := range []struct {
		user string
		hdr  []string
	}{{"bob", nil}, {"alice", []string{"X-API-Key", "second-key"}}} {
		r := e.live("same-hint", map[string]any{"lang": "py", "code": "print('secret' in dir())", "user_id": c.user}, c.hdr...)
		if r.Stdout != "False\n" || r.RuntimeStatus != "new" {
			t.Fatalf("%s %v saw another caller's session: %+v", c.user, c.hdr, r)
		}
	}
	r := e.live("same-hint", map[string]any{"lang": "py", "code": "print(secret)", "user_id": "alice"})
	if r.Stdout != "alice\n" || r.RuntimeStatus != "reused" {
		t.Fatalf("owner: %+v", r)
	}
}

func TestStatefulIdleAndEvictionKeepFiles(t *testing.T) {
	e := newEnv(t)
	m := e.withRuntime(runtime.Config{IdleTimeout: time.Second, MaxSessions: 1})
	r := e.live("a", map[string]any{"lang": "py", "code": "v = 1\nopen('keep.txt','w').write('kept')"})
	f := fileNamed(r.Files, "keep.txt")
	if f == nil {
		t.Fatalf("%+v", r)
	}
	refs := []any{map[string]any{"id": f.ID, "storage_session_id": f.StorageSessionID, "name": "keep.txt", "kind": "user"}}
	// Another session evicts the first (at most one lives).
	e.live("b", map[string]any{"lang": "py", "code": "w = 2"})
	r = e.live("a", map[string]any{"lang": "py", "files": refs, "code": "print('v' in dir(), open('keep.txt').read())"})
	if r.Stdout != "False kept\n" || r.RuntimeStatus != "new" {
		t.Fatalf("after eviction: %+v", r)
	}
	// Idle expiry.
	deadline := time.Now().Add(5 * time.Second)
	for m.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if m.Len() != 0 {
		t.Fatalf("%d sessions still live after the idle timeout", m.Len())
	}
	r = e.live("a", map[string]any{"lang": "py", "files": refs, "code": "print(open('keep.txt').read())"})
	if r.Stdout != "kept\n" || r.RuntimeStatus != "new" {
		t.Fatalf("after idle expiry: %+v", r)
	}
	e.srv.Config.Handler.(*Server).Runtime.Close()
	e.assertClean()
}

func TestStatefulMemoryBombKillsOnlyItsSession(t *testing.T) {
	e := newEnv(t)
	e.withRuntime(runtime.Config{})
	e.live("calm", map[string]any{"lang": "py", "code": "z = 3"})
	r := e.live("bomb", map[string]any{"lang": "py", "code": "b = []\nwhile True:\n    b.append(bytearray(16 << 20))"})
	if r.Status != "memory" {
		t.Fatalf("bomb: %+v", r)
	}
	if r := e.live("calm", map[string]any{"lang": "py", "code": "print(z)"}); r.Stdout != "3\n" || r.RuntimeStatus != "reused" {
		t.Fatalf("the other session suffered: %+v", r)
	}
	if r := e.live("bomb", map[string]any{"lang": "py", "code": "print('b' in dir())"}); r.Stdout != "False\n" || r.RuntimeStatus != "new" {
		t.Fatalf("bomb session after OOM: %+v", r)
	}
}

func TestStatefulProfileNeedsRuntime(t *testing.T) {
	e := newEnv(t)
	got := decode[map[string]string](t, e.post("/exec", `{"lang":"py","code":"1","runtime_session_hint":"h"}`, "X-CodeAPI-Expected-Profile", "stateful"), http.StatusConflict)
	if got["error"] != "execution_profile_mismatch" {
		t.Fatalf("%v", got)
	}
	e.withRuntime(runtime.Config{})
	got = decode[map[string]string](t, e.post("/exec", `{"lang":"java","code":"1","runtime_session_hint":"h"}`, "X-CodeAPI-Expected-Profile", "stateful"), http.StatusConflict)
	if got["error"] != "capability_mismatch" {
		t.Fatalf("%v", got)
	}
	for _, hint := range []string{"", strings.Repeat("h", 300)} {
		decode[map[string]string](t, e.post("/exec", map[string]any{"lang": "py", "code": "1", "runtime_session_hint": hint}, "X-CodeAPI-Expected-Profile", "stateful"), http.StatusBadRequest)
	}
	// LibreChat's prewarm call.
	if r := e.live("warm", map[string]any{"lang": "bash", "code": "true"}); r.Status != "ok" || r.RuntimeStatus != "new" {
		t.Fatalf("prewarm: %+v", r)
	}
}

func TestStatefulV1Session(t *testing.T) {
	e := newEnv(t)
	m := e.withRuntime(runtime.Config{})
	s := decode[v1Session](t, e.post("/v1/sessions", `{"language":"python","stateful":true}`), http.StatusCreated)
	base := "/v1/sessions/" + s.SessionID
	decode[v1Exec](t, e.post(base+"/execute", `{"code":"a = 5\nopen('n.txt','w').write('1')"}`), 200)
	r := decode[v1Exec](t, e.post(base+"/execute", `{"code":"print(a, open('n.txt').read())\nopen('n.txt','w').write('2')"}`), 200)
	if r.Stdout != "5 1\n" {
		t.Fatalf("%+v", r)
	}
	got := decode[v1Session](t, e.do("GET", base, nil), 200)
	if len(got.Files) != 1 || got.Files[0].Path != "n.txt" || got.Files[0].Size != 1 {
		t.Fatalf("files: %+v", got.Files)
	}
	decode[map[string]any](t, e.do("DELETE", base, nil), 200)
	if m.Len() != 0 {
		t.Fatalf("deleting the session left its interpreter running")
	}
}

// A /v1 stateful session runs over the same path as the stateful /exec
// profile: a language the runtime cannot keep alive is the same 409
// capability_mismatch, and its calls are counted in the same metric.
func TestStatefulV1SharesTheExecPath(t *testing.T) {
	e := newEnv(t)
	e.withRuntime(runtime.Config{})
	s := e.srv.Config.Handler.(*Server)
	s.Metrics = metrics.New(func() float64 { return 0 }, func() float64 { return 0 }, func() float64 { return 0 })
	sess := decode[v1Session](t, e.post("/v1/sessions", `{"language":"python","stateful":true}`), http.StatusCreated)
	base := "/v1/sessions/" + sess.SessionID
	got := decode[map[string]string](t, e.post(base+"/execute", `{"code":"int main(){}","language":"c"}`), http.StatusConflict)
	if got["error"] != "capability_mismatch" {
		t.Fatalf("v1 stateful call in C: %v", got)
	}
	if r := decode[v1Exec](t, e.post(base+"/execute", `{"code":"print(2)"}`), 200); r.Stdout != "2\n" {
		t.Fatalf("%+v", r)
	}
	if r := e.live("h", map[string]any{"lang": "py", "code": "print(3)"}); r.Stdout != "3\n" {
		t.Fatalf("%+v", r)
	}
	// Both calls are labelled with the run's status, not the session's
	// ("new"/"reused").
	if n := testutil.CollectAndCount(s.Metrics.Executions); n != 1 {
		t.Fatalf("executions series: %d, want one (py, ok)", n)
	}
	mfs, err := s.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "codeexec_execution_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range h.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["status"] != "ok" || h.GetHistogram().GetSampleCount() != 2 {
			t.Fatalf("executions: labels %v, %d samples; want status ok, 2", labels, h.GetHistogram().GetSampleCount())
		}
		return
	}
	t.Fatal("no codeexec_execution_duration_seconds metric")
}

// TestStatefulMemoryLimitCoversTheSession: the memory limit covers the
// whole live session, not each call: two calls that each keep 100 MiB
// alive fit a 256 MiB limit; a third does not, and kills the session.
func TestStatefulMemoryLimitCoversTheSession(t *testing.T) {
	if !onBackends(t, cold, warm, gvisor) {
		return
	}
	e := newEnv(t)
	e.withRuntime(runtime.Config{})
	keep := "import numpy as np\n%s = np.ones(100 << 20, dtype=np.uint8)\nprint(int(%s.sum()) >> 20)"
	for _, name := range []string{"a", "b"} {
		r := e.live("mem", map[string]any{"lang": "py", "code": fmt.Sprintf(keep, name, name)})
		if assertOK(t, r); r.Stdout != "100\n" {
			t.Fatalf("%s: %q", name, r.Stdout)
		}
	}
	r := e.live("mem", map[string]any{"lang": "py", "code": fmt.Sprintf(keep, "c", "c")})
	if r.Status != "memory" || r.Stdout != "" || r.Stderr != "[codeexec] the runtime session ended (memory); its variables are lost, its files are kept\n" {
		t.Fatalf("a third 100 MiB in a 256 MiB session: status %q stdout %q stderr %q", r.Status, r.Stdout, r.Stderr)
	}
	r = e.live("mem", map[string]any{"lang": "py", "code": "print('a' in dir())"})
	if r.Stdout != "False\n" || r.RuntimeStatus != "new" {
		t.Fatalf("after the session's OOM: %+v", r)
	}
}

// BenchmarkStatefulLatency compares a trivial call to a live session with a
// one-shot execution on the same server (the README's figures):
// go test -run '^$' -bench StatefulLatency ./internal/api/
func BenchmarkStatefulLatency(b *testing.B) {
	e := newEnv(b)
	e.withRuntime(runtime.Config{})
	b.Run("live", func(b *testing.B) {
		e.live("lat", map[string]any{"lang": "py", "code": "pass"})
		for i := 0; i < b.N; i++ {
			if r := e.live("lat", map[string]any{"lang": "py", "code": "print(1)"}); r.Stdout != "1\n" {
				b.Fatalf("%+v", r)
			}
		}
	})
	b.Run("one-shot", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if r := e.ok(map[string]any{"lang": "py", "code": "print(1)"}); r.Stdout != "1\n" {
				b.Fatalf("%+v", r)
			}
		}
	})
}
