package runtime

// Unit tests of the session manager over the fake sandbox: a Go stand-in
// for kernel.py speaks the kernel's protocol on the session's socket, so
// reuse, state, eviction, a dying kernel and clean-up are tested without
// root (`make unit`). The real kernel in a real sandbox is tested in
// internal/api (stateful_test.go).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/storage"
)

// fakeKernel answers calls as kernel.py would, for a tiny language:
// "set K V" keeps a variable, "get K" prints it, "write F" writes a file
// into /mnt/data, "sleep" outlasts the call's timeout, "die" ends the
// kernel (its session dies).
func fakeKernel(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
	argv := r.Spec.Steps[0].Argv
	if len(argv) < 4 || !strings.HasSuffix(argv[2], "kernel.py") || r.Source(argv[2]) == "" {
		return sandbox.Result{}, fmt.Errorf("not the kernel: %q", argv)
	}
	c, err := net.Dial("unix", r.Path(argv[3]))
	if err != nil {
		return sandbox.Result{}, err
	}
	defer c.Close()
	context.AfterFunc(ctx, func() { c.Close() }) // killed with its sandbox
	c.Write([]byte(`{"ready":true}` + "\n"))
	vars := map[string]string{}
	rd := bufio.NewReader(c)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			return sandbox.Result{ExitCode: 137}, nil
		}
		var req struct {
			ID        int    `json:"id"`
			Code      string `json:"code"`
			TimeoutMS int64  `json:"timeout_ms"`
		}
		json.Unmarshal(line, &req)
		a := answer{ID: req.ID, Status: "ok"}
		f := strings.Fields(req.Code)
		switch {
		case len(f) == 3 && f[0] == "set":
			vars[f[1]] = f[2]
		case len(f) == 2 && f[0] == "get":
			a.Stdout = vars[f[1]] + "\n"
		case len(f) == 2 && f[0] == "write":
			r.WriteFile(f[1], []byte("from the kernel"))
		case len(f) == 1 && f[0] == "sleep":
			sleeping.Add(1)
			time.Sleep(time.Duration(req.TimeoutMS) * time.Millisecond)
			sleeping.Add(-1)
			a.Status, a.ExitCode = "timeout", 124
		case len(f) == 1 && f[0] == "die":
			return sandbox.Result{ExitCode: 1}, nil
		default:
			a.Status, a.ExitCode, a.Stderr = "error", 1, "unknown: "+req.Code
		}
		b, _ := json.Marshal(a)
		c.Write(append(b, '\n'))
	}
}

// sleeping counts the fake kernels in a "sleep" call.
var sleeping atomic.Int32

func unitManager(t *testing.T, cfg Config) (*Manager, *sandboxtest.Fake) {
	t.Helper()
	box := sandboxtest.New(fakeKernel)
	store := storage.OpenMemory()
	eng := engine.New(store, box, engine.Limits{
		WallTime: 2 * time.Second, CPUTime: 2 * time.Second, MemoryBytes: 64 << 20, Pids: 32,
		OutputBytes: 1 << 20, DiskBytes: 8 << 20, CollectFileBytes: 1 << 20, MaxOutputFiles: 10, MaxInputFiles: 8,
	}, slog.New(slog.DiscardHandler))
	m := New(eng, cfg)
	t.Cleanup(func() {
		m.Close()
		if err := box.Close(); err != nil {
			t.Error(err) // a session's workspace was never released
		}
		store.Close()
	})
	return m, box
}

// call runs code in key's session; the caller is the key's first letter.
func call(t *testing.T, m *Manager, key, code string) *Outcome {
	t.Helper()
	py, _ := lang.Lookup("py")
	out, err := m.Exec(context.Background(), key[:1], key, engine.Request{Lang: py, Code: code})
	if err != nil {
		t.Fatalf("%s %q: %v", key, code, err)
	}
	return out
}

// A session keeps its kernel from call to call, one per key; the files
// a call writes come back with it.
func TestUnitSessionReuse(t *testing.T) {
	m, box := unitManager(t, Config{})
	first := call(t, m, "a", "set x 41")
	if first.Status != "new" || first.Result.Status != sandbox.StatusOK {
		t.Fatalf("first call: %s %s", first.Status, first.Result.Status)
	}
	again := call(t, m, "a", "get x")
	if again.Status != "reused" || again.RuntimeID != first.RuntimeID || again.Stdout != "41\n" {
		t.Fatalf("second call: %s %s stdout %q", again.Status, again.RuntimeID, again.Stdout)
	}
	other := call(t, m, "b", "get x")
	if other.Status != "new" || other.RuntimeID == first.RuntimeID || other.Stdout != "\n" {
		t.Fatalf("another key saw the session: %s stdout %q", other.Status, other.Stdout)
	}
	w := call(t, m, "a", "write out.txt")
	if len(w.Files) != 1 || w.Files[0].Name != "out.txt" {
		t.Fatalf("files %+v", w.Files)
	}
	if n := len(box.Runs()); n != 2 {
		t.Errorf("%d kernels started, want 2", n)
	}
	if m.Len() != 2 {
		t.Errorf("Len %d", m.Len())
	}
}

// A kernel that dies in a call answers with a note, and the next call
// starts a new session (its variables are gone).
func TestUnitSessionDies(t *testing.T) {
	m, _ := unitManager(t, Config{})
	call(t, m, "a", "set x 1")
	d := call(t, m, "a", "die")
	if !strings.Contains(d.Stderr, "[codeexec] the runtime session ended") {
		t.Fatalf("stderr %q", d.Stderr)
	}
	n := call(t, m, "a", "get x")
	if n.Status != "new" || n.Stdout != "\n" {
		t.Fatalf("after the death: %s stdout %q", n.Status, n.Stdout)
	}
}

// Past MaxSessions the least recently used session is closed and its
// workspace released.
func TestUnitSessionEviction(t *testing.T) {
	m, box := unitManager(t, Config{MaxSessions: 2, PerCaller: 2})
	call(t, m, "a1", "set x 1")
	call(t, m, "a2", "set x 2")
	call(t, m, "a1", "get x") // a2 is now the least recently used
	call(t, m, "a3", "set x 3")
	if m.Len() != 2 {
		t.Fatalf("Len %d", m.Len())
	}
	if got := call(t, m, "a1", "get x"); got.Status != "reused" || got.Stdout != "1\n" {
		t.Errorf("a1: %s %q", got.Status, got.Stdout)
	}
	if got := call(t, m, "a2", "get x"); got.Status != "new" {
		t.Errorf("a2 was not evicted: %s", got.Status)
	}
	if n := len(box.OpenWorkdirs()); n != 2 {
		t.Errorf("%d workspaces open for 2 sessions", n)
	}
}

// A caller past its own quota makes room among its own sessions, never
// another caller's; a session in a call is never evicted: with nothing
// else to evict the answer is BusyError.
func TestUnitSessionQuotaPerCaller(t *testing.T) {
	m, _ := unitManager(t, Config{MaxSessions: 4, PerCaller: 2})
	call(t, m, "b1", "set x b")
	call(t, m, "a1", "set x 1")
	call(t, m, "a2", "set x 2")
	call(t, m, "a3", "set x 3") // a1 goes, b1 stays
	if got := call(t, m, "b1", "get x"); got.Status != "reused" || got.Stdout != "b\n" {
		t.Fatalf("another caller's session was evicted: %s %q", got.Status, got.Stdout)
	}
	if got := call(t, m, "a1", "get x"); got.Status != "new" {
		t.Fatalf("a1: %s, want new (evicted)", got.Status)
	}
	// a1 (new) and a3 are a's two sessions now; hold both in a call.
	py, _ := lang.Lookup("py")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan error, 2)
	for _, k := range []string{"a1", "a3"} {
		go func() {
			_, err := m.Exec(ctx, "a", k, engine.Request{Lang: py, Code: "sleep", Timeout: 3 * time.Second})
			held <- err
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); sleeping.Load() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two calls never started")
		}
	}
	var busy *BusyError
	if _, err := m.Exec(context.Background(), "a", "a4", engine.Request{Lang: py, Code: "set x 4"}); !errors.As(err, &busy) || !busy.Own {
		t.Fatalf("a caller with every session in a call got %v, want BusyError", err)
	}
	cancel()
	for range 2 {
		<-held
	}
	if got := call(t, m, "b1", "get x"); got.Status != "reused" {
		t.Fatalf("b1: %s", got.Status)
	}
}

func TestUnitUnsupportedLanguage(t *testing.T) {
	m, box := unitManager(t, Config{})
	js, _ := lang.Lookup("js")
	if _, err := m.Exec(context.Background(), "a", "a", engine.Request{Lang: js, Code: "1"}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err %v", err)
	}
	if n := len(box.Runs()); n != 0 {
		t.Errorf("%d kernels started", n)
	}
}

// Close ends every session and releases every workspace (the cleanup's
// box.Close fails otherwise).
func TestUnitCloseReleasesAll(t *testing.T) {
	m, box := unitManager(t, Config{})
	call(t, m, "a", "set x 1")
	call(t, m, "b", "set x 1")
	m.Close()
	if open := box.OpenWorkdirs(); len(open) != 0 {
		t.Fatalf("open after Close: %v", open)
	}
}
