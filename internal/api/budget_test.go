package api

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/runtime"
)

// TestMemoryBudgetEvictsIdleSessionsThenRefuses fills a budget of two
// executions' memory with idle stateful sessions: one-shot runs evict the
// least recently used idle session first (its next call starts anew), and
// only when running executions hold everything does a run wait and get a
// 429 saying why.
func TestMemoryBudgetEvictsIdleSessionsThenRefuses(t *testing.T) {
	e := newEnv(t)
	s := e.srv.Config.Handler.(*Server)
	share := s.Engine.Limits().MemoryBytes
	b := admission.NewBudget(2*share+64<<20, 64<<20)
	s.Budget, s.MemoryWait = b, 500*time.Millisecond
	m := e.withRuntime(runtime.Config{Memory: b, MemoryWait: 500 * time.Millisecond})
	b.SetEvictor(m.EvictIdle)
	held := func(kind string) int64 { return b.Stats().Held[kind] }

	if r := e.live("a", map[string]any{"lang": "py", "code": "x = 1"}); r.RuntimeStatus != "new" {
		t.Fatalf("a: %+v", r)
	}
	if r := e.live("b", map[string]any{"lang": "py", "code": "y = 2"}); r.RuntimeStatus != "new" {
		t.Fatalf("b: %+v", r)
	}
	if held(admission.KindSession) != 2*share || m.Len() != 2 {
		t.Fatalf("two idle sessions: %+v, live %d", b.Stats(), m.Len())
	}

	// Full of idle sessions: a one-shot run evicts the older one (a).
	if r := e.exec(map[string]any{"lang": "py", "code": "print(6*7)"}); r.Stdout != "42\n" {
		t.Fatalf("run beside idle sessions: %+v", r)
	}
	if held(admission.KindSession) != share || held(admission.KindExec) != 0 || m.Len() != 1 {
		t.Fatalf("after eviction: %+v, live %d", b.Stats(), m.Len())
	}
	if r := e.live("b", map[string]any{"lang": "py", "code": "print(y)"}); r.RuntimeStatus != "reused" || r.Stdout != "2\n" {
		t.Fatalf("b kept: %+v", r)
	}
	if r := e.live("a", map[string]any{"lang": "py", "code": "print('x' in dir())"}); r.RuntimeStatus != "new" || r.Stdout != "False\n" {
		t.Fatalf("a evicted: %+v", r)
	}

	// Two long runs take both shares (evicting both idle sessions); a
	// third waits MemoryWait and is refused with the reason.
	type answer struct {
		status int
		body   []byte
	}
	done := make(chan answer, 2)
	for range 2 {
		go func() {
			resp := e.post("/exec", map[string]any{"lang": "bash", "code": "sleep 3; echo done"})
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- answer{resp.StatusCode, body}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for held(admission.KindExec) != 2*share {
		if time.Now().After(deadline) {
			t.Fatalf("the two runs never held the budget: %+v", b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m.Len() != 0 || held(admission.KindSession) != 0 {
		t.Fatalf("idle sessions not evicted: %+v, live %d", b.Stats(), m.Len())
	}
	resp := e.post("/exec", map[string]any{"lang": "py", "code": "print(1)"})
	var got struct {
		Error, Message string
		RetryAfter     int `json:"retry_after_seconds"`
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	const want = "Too many executions in progress (the server's memory budget is fully committed: 512 of 512 MiB held by 512 MiB of executions, 0 MiB of stateful sessions, 0 MiB of warm templates). Please retry in 1 seconds."
	if resp.StatusCode != http.StatusTooManyRequests || got.Error != "rate_limited" || got.Message != want || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("over budget: %d %+v", resp.StatusCode, got)
	}
	for range 2 {
		a := <-done
		var r execResult
		json.Unmarshal(a.body, &r)
		if a.status != 200 || r.Stdout != "done\n" {
			t.Fatalf("long run: %d %s", a.status, a.body)
		}
	}
	if st := b.Stats(); st.Used != 0 {
		t.Fatalf("all done, budget still held: %+v", st)
	}
	// And the health endpoint shows it.
	h := decode[map[string]any](t, e.do("GET", "/health", nil), 200)
	mb, _ := h["memory_budget"].(map[string]any)
	if mb["available_bytes"] != float64(2*share) || mb["used_bytes"] != float64(0) || mb["reserve_bytes"] != float64(64<<20) {
		t.Fatalf("health: %v", h)
	}
}
