package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/console"
	"github.com/codeexec/codeexec/internal/engine"
)

// TestConsoleTracksExecutions: real runs through /exec show up in the
// console's JSON while they run, then with their outcome; requests refused
// before running do not.
func TestConsoleTracksExecutions(t *testing.T) {
	e := newEnv(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := engine.New(e.store, e.box, engine.Limits{
		WallTime: 20 * time.Second, CPUTime: 10 * time.Second, MemoryBytes: 256 << 20, Pids: 64,
		OutputBytes: 1 << 20, DiskBytes: 64 << 20, CollectFileBytes: 8 << 20, MaxOutputFiles: 10, MaxInputFiles: 10,
	}, log)
	authn, err := auth.New(auth.Config{Keys: []string{testKey}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(Deps{Engine: eng, Store: e.store, Box: e.box, Auth: authn, Log: log,
		Console: console.New(console.Config{})}))
	defer srv.Close()
	// The caller is the principal the key authenticates as, never the key.
	kr := httptest.NewRequest("GET", "/", nil)
	kr.Header.Set("X-API-Key", testKey)
	p, err := authn.Authenticate(kr)
	if err != nil || strings.Contains(p.ID, testKey) {
		t.Fatalf("principal %q: %v", p.ID, err)
	}
	caller := p.ID

	call := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-API-Key", testKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	snapshot := func() console.Snapshot {
		code, b := call("GET", "/console/api/executions", "")
		var s console.Snapshot
		if code != 200 || json.Unmarshal(b, &s) != nil {
			t.Fatalf("executions: %d %s", code, b)
		}
		return s
	}

	// Refused before running: not an execution.
	if code, b := call("POST", "/exec", `{"lang":"cobol","code":"x"}`); code != 400 {
		t.Fatalf("unknown language: %d %s", code, b)
	}
	if code, b := call("POST", "/exec", `{"lang":"bash","code":"exit 3"}`); code != 200 || !strings.Contains(string(b), `"status":"error"`) {
		t.Fatalf("exit 3: %d %s", code, b)
	}
	if code, b := call("POST", "/exec", `{"lang":"bash","code":"sleep 5","timeout":300}`); code != 200 || !strings.Contains(string(b), `"status":"timeout"`) {
		t.Fatalf("timeout: %d %s", code, b)
	}
	// A run in progress is listed with its language and caller.
	done := make(chan []byte, 1)
	go func() {
		_, b := call("POST", "/v1/exec", `{"lang":"python","code":"import time; time.sleep(1.5); print('up')"}`)
		done <- b
	}()
	var s console.Snapshot
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s = snapshot(); len(s.Running) == 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(s.Running) != 1 || s.Running[0].Language != "py" || s.Running[0].Caller != caller {
		t.Fatalf("running: %+v", s.Running)
	}
	if b := <-done; !strings.Contains(string(b), `"stdout":"up\n"`) {
		t.Fatalf("sleep run: %s", b)
	}
	s = snapshot()
	if len(s.Running) != 0 || s.Total != 3 || len(s.Recent) != 3 {
		t.Fatalf("after the runs: %+v", s)
	}
	py, timeout, exit3 := s.Recent[0], s.Recent[1], s.Recent[2]
	if py.Language != "py" || py.Status != "ok" || py.WallMS < 1500 || py.Caller != caller {
		t.Errorf("py run recorded as %+v", py)
	}
	if timeout.Status != "timeout" || timeout.WallMS < 300 || exit3.Status != "error" || exit3.Language != "bash" {
		t.Errorf("bash runs recorded as %+v and %+v", timeout, exit3)
	}
	if len(s.Languages) != 2 || s.Languages[0].Language != "bash" || s.Languages[0].Count != 2 || s.Languages[0].Statuses["timeout"] != 1 {
		t.Errorf("languages: %+v", s.Languages)
	}
}

// BenchmarkConsoleHooks is what the console adds to each execution on the
// request path (caller key, Begin, End), against the same server without
// it: compare with an execution's own cost (milliseconds).
func BenchmarkConsoleHooks(b *testing.B) {
	r := httptest.NewRequest("POST", "/exec", nil)
	r.Header.Set("X-API-Key", testKey)
	res := &engine.Result{Status: "ok", WallTime: 10 * time.Millisecond, MemoryPeak: 1 << 20}
	for _, on := range []bool{false, true} {
		s := &Server{}
		name := "off"
		if on {
			s.Console, name = console.New(console.Config{}), "on"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.trackEnd(s.trackBegin(r, "py"), res, nil)
			}
		})
	}
}
