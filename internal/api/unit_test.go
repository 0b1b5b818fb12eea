package api

// Unit tests of the HTTP layer over the fake sandbox and the in-memory
// store: request validation, error codes and the encoding of answers of
// both APIs, with real HTTP but without root or a real sandbox (`make
// unit`). What code does in a sandbox is tested on the real backends.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/storage"
)

// newUnitEnv is newEnv over a fake sandbox running p and an in-memory
// store. Its leftovers are the fake's unreleased workdirs.
func newUnitEnv(t testing.TB, p sandboxtest.Program, opts ...envOption) (*env, *sandboxtest.Fake) {
	t.Helper()
	store := storage.OpenMemory()
	box := sandboxtest.New(p)
	limits := engine.Limits{
		WallTime: 5 * time.Second, CPUTime: 5 * time.Second, MemoryBytes: 64 << 20, Pids: 32,
		OutputBytes: 1 << 20, DiskBytes: 8 << 20, CollectFileBytes: 1 << 20, MaxOutputFiles: 10, MaxInputFiles: 8,
	}
	ac := auth.Config{Keys: []string{testKey}}
	for _, o := range opts {
		o(&limits, &ac)
	}
	authn, err := auth.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	eng := engine.New(store, box, limits, log)
	h := NewServer(Deps{Engine: eng, Store: store, Box: box, Auth: authn, Log: log, Limits: Limits{MaxUploadBytes: 1 << 20, MaxJSONBytes: 1 << 20}})
	e := &env{t: t, srv: httptest.NewServer(h), store: store, box: box}
	t.Cleanup(func() {
		e.srv.Close()
		if err := box.Close(); err != nil {
			t.Error(err)
		}
		store.Close()
	})
	return e, box
}

// echo is a program that prints its source and writes out.txt when asked.
func echo(ctx context.Context, r *sandboxtest.Run) (sandbox.Result, error) {
	var src string
	for _, f := range r.Spec.Files {
		src = string(f.Data)
	}
	fmt.Fprint(r.Stdout, src)
	if strings.Contains(src, "write") {
		if err := r.WriteFile("out.txt", []byte("written by "+src)); err != nil {
			return sandbox.Result{}, err
		}
	}
	if strings.Contains(src, "fail") {
		fmt.Fprint(r.Stderr, "failed\n")
		return sandbox.Result{ExitCode: 2}, nil
	}
	return sandbox.Result{}, nil
}

// Every malformed /exec body is refused with 400 (or 403 for a file that is
// not the caller's) and a message that names the problem; nothing runs.
func TestUnitExecRequestErrors(t *testing.T) {
	e, box := newUnitEnv(t, echo)
	cases := []struct {
		body   string
		status int
		want   string
	}{
		{`{"lang":"cobol","code":"x"}`, 400, "Unsupported language: cobol"},
		{`{"code":"print(1)"}`, 400, "lang is required"},
		{`{"lang":"  ","code":"print(1)"}`, 400, "lang is required"},
		{`{"lang":"py"}`, 400, "code is required"},
		{`{"lang":"py","code":`, 400, "invalid JSON"},
		{`not json`, 400, "invalid JSON"},
		{`{"lang":"py","code":"1","args":{"a":1}}`, 400, "args"},
		{`{"lang":"py","code":"1","args":["a\u0000b"]}`, 400, "NUL"},
		{`{"lang":"py","code":"1","timeout":"soon"}`, 400, "invalid JSON"},
		{`{"lang":"py","code":"1","timeout":-5}`, 400, "timeout"},
		{`{"lang":"py","code":"1","files":[{"id":"abc","session_id":"s1","name":"/etc/passwd"}]}`, 400, "absolute"},
		{`{"lang":"py","code":"1","files":[{"id":"abc","session_id":"s1","name":"../x"}]}`, 400, "'..'"},
		{`{"lang":"py","code":"1","files":[{"id":"abc","session_id":"s1","name":"a//b"}]}`, 400, "empty path segment"},
		{`{"lang":"py","code":"1","files":[{"id":"abc","session_id":"s1","name":"a\nb"}]}`, 400, "control characters"},
		{`{"lang":"py","code":"1","files":[{"id":"../../x","session_id":"s1","name":"a"}]}`, 400, "session and id"},
		{`{"lang":"py","code":"1","files":[{"id":"nosuchfile","session_id":"nosuchsession","name":"a"}]}`, 403, "Unauthorized file reference"},
		{`{"lang":"py","code":"` + strings.Repeat("x", 1<<20) + `"}`, 413, "request body larger than"},
	}
	for _, c := range cases {
		got := decode[map[string]string](t, e.post("/exec", c.body), c.status)
		if !strings.Contains(got["error"], c.want) {
			t.Errorf("%.80s: error %q, want it to contain %q", c.body, got["error"], c.want)
		}
	}
	if n := len(box.Runs()); n != 0 {
		t.Errorf("refused requests ran %d times", n)
	}
}

// Credentials are checked before anything else, on both APIs.
func TestUnitAuth(t *testing.T) {
	e, box := newUnitEnv(t, echo)
	for _, path := range []string{"/exec", "/v1/sessions", "/upload", "/files/abc", "/languages"} {
		for name, hdr := range map[string][]string{
			"missing": {"X-API-Key", ""},
			"wrong":   {"X-API-Key", "nope"},
			"bearer":  {"X-API-Key", "", "Authorization", "Bearer nope"},
		} {
			method := "POST"
			if path == "/files/abc" || path == "/languages" {
				method = "GET"
			}
			resp := e.do(method, path, strings.NewReader(`{"lang":"py","code":"1"}`), hdr...)
			got := decode[map[string]string](t, resp, http.StatusUnauthorized)
			if got["error"] == "" {
				t.Errorf("%s %s: no error message", path, name)
			}
		}
	}
	if n := len(box.Runs()); n != 0 {
		t.Errorf("unauthenticated requests ran %d times", n)
	}
}

// An /exec answer carries the run's output, status and files in LibreChat's
// shape, and the files can be downloaded and listed.
func TestUnitExecAnswer(t *testing.T) {
	e, _ := newUnitEnv(t, echo)
	r := e.exec(map[string]any{"lang": "py", "code": "write", "files": []any{}})
	if r.Stdout != "write" || r.Stderr != "" || r.Status != "ok" || r.ExitCode != 0 || r.Code != 0 || r.Signal != nil || r.Language != "py" {
		t.Fatalf("answer %+v", r)
	}
	if !urlSafeID.MatchString(r.SessionID) || len(r.Files) != 1 || r.Files[0].Name != "out.txt" {
		t.Fatalf("session %q files %+v", r.SessionID, r.Files)
	}
	if got := string(e.download(r.SessionID, r.Files[0].ID)); got != "written by write" {
		t.Fatalf("download %q", got)
	}
	list := decode[[]map[string]any](t, e.do("GET", "/files/"+r.SessionID+"?detail=full", nil), 200)
	if len(list) != 1 {
		t.Fatalf("listing %v", list)
	}

	f := e.exec(map[string]any{"lang": "py", "code": "fail"})
	if f.Status != "error" || f.ExitCode != 2 || f.Stderr != "failed\n" || f.Stdout != "fail" {
		t.Fatalf("failed run %+v", f)
	}
}

// The spec the API asks for: the language's argv, the caller's args and
// stdin, the timeout in milliseconds on /exec and in seconds on /v1.
func TestUnitRequestReachesTheSandbox(t *testing.T) {
	e, box := newUnitEnv(t, echo)
	e.exec(map[string]any{"lang": "python", "code": "1", "args": []string{"a b", "c"}, "stdin": "in", "timeout": 1500})
	e.exec(map[string]any{"lang": "py", "code": "1", "args": "x  y"})
	sess := decode[map[string]any](t, e.post("/v1/sessions", map[string]any{"language": "py"}), 201)
	decode[map[string]any](t, e.post("/v1/sessions/"+sess["session_id"].(string)+"/execute", map[string]any{"code": "2", "timeout": 2}), 200)
	runs := box.Runs()
	if len(runs) != 3 {
		t.Fatalf("%d runs", len(runs))
	}
	py, _ := lang.Lookup("py")
	want := append(py.Expand(py.Run, "1"), "a b", "c")
	if got := runs[0].Steps[0].Argv; strings.Join(got, "|") != strings.Join(want, "|") || string(runs[0].Steps[0].Stdin) != "in" {
		t.Errorf("argv %q stdin %q, want %q", got, runs[0].Steps[0].Stdin, want)
	}
	if runs[0].Limits.WallTime != 1500*time.Millisecond {
		t.Errorf("/exec timeout 1500 ms gave wall time %v", runs[0].Limits.WallTime)
	}
	if got := runs[1].Steps[0].Argv; got[len(got)-2] != "x" || got[len(got)-1] != "y" {
		t.Errorf("string args: %q", got)
	}
	if runs[2].Limits.WallTime != 2*time.Second {
		t.Errorf("/v1 timeout 2 s gave wall time %v", runs[2].Limits.WallTime)
	}
}

// The /v1/sessions API's validation and not-found answers.
func TestUnitSessionsErrors(t *testing.T) {
	e, box := newUnitEnv(t, echo)
	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`{}`, 400, "language is required"},
		{`{"language":"cobol"}`, 400, "Unsupported language: cobol"},
		{`{"language":"py","stateful":true}`, 400, "stateful"},
		{`{"language":`, 400, "invalid JSON"},
	} {
		got := decode[map[string]string](t, e.post("/v1/sessions", c.body), c.status)
		if !strings.Contains(got["error"], c.want) {
			t.Errorf("create %s: error %q, want %q", c.body, got["error"], c.want)
		}
	}
	sess := decode[map[string]any](t, e.post("/v1/sessions", `{"language":"bash"}`), 201)
	id := sess["session_id"].(string)
	if sess["language"] != "bash" || sess["stateful"] != false {
		t.Errorf("session %v", sess)
	}
	for _, c := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/sessions/" + id + "/execute", `{}`, 400, "code is required"},
		{"/v1/sessions/" + id + "/execute", `{"code":"1","language":"cobol"}`, 400, "Unsupported language"},
		{"/v1/sessions/" + id + "/execute", `{"code":"1","args":{}}`, 400, "args"},
		{"/v1/sessions/nosuchsession/execute", `{"code":"1"}`, 404, "Session not found"},
	} {
		got := decode[map[string]string](t, e.post(c.path, c.body), c.status)
		if !strings.Contains(got["error"], c.want) {
			t.Errorf("%s %s: error %q, want %q", c.path, c.body, got["error"], c.want)
		}
	}
	decode[map[string]string](t, e.do("GET", "/v1/sessions/nosuchsession", nil), 404)
	decode[map[string]string](t, e.do("DELETE", "/v1/sessions/nosuchsession", nil), 404)
	if n := len(box.Runs()); n != 0 {
		t.Errorf("refused requests ran %d times", n)
	}
	// A /v1 session keeps its files from call to call.
	decode[map[string]any](t, e.post("/v1/sessions/"+id+"/execute", `{"code":"write"}`), 200)
	resp := e.do("GET", "/v1/sessions/"+id+"/files/out.txt", nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "written by write" {
		t.Fatalf("session file: %d %q", resp.StatusCode, b)
	}
}

// A server without the stateful runtime refuses the stateful profile with
// 409, as LibreChat's client expects of a server lacking a capability.
func TestUnitProfileMismatch(t *testing.T) {
	e, box := newUnitEnv(t, echo)
	for _, p := range []string{"stateful", "gpu"} {
		got := decode[map[string]string](t, e.post("/exec", `{"lang":"py","code":"1","runtime_session_hint":"h"}`, profileHeader, p), 409)
		if got["error"] != "execution_profile_mismatch" {
			t.Errorf("%s: %v", p, got)
		}
	}
	resp := e.post("/exec", `{"lang":"py","code":"1"}`, profileHeader, "DEFAULT")
	if resp.Header.Get("X-CodeAPI-Execution-Profile") != "default" {
		t.Errorf("profile header %q", resp.Header.Get("X-CodeAPI-Execution-Profile"))
	}
	decode[execResult](t, resp, 200)
	if n := len(box.Runs()); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

func TestUnitUnknownRoutes(t *testing.T) {
	e, _ := newUnitEnv(t, echo)
	decode[map[string]string](t, e.do("GET", "/nope", nil), 404)
	resp := e.do("GET", "/exec", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /exec: %d", resp.StatusCode)
	}
}

// TestUnitContinuationIn: a body's first bytes tell a continuation (its
// token as a top-level member, named as encoding/json would match it) from
// a new run; a token nested in a value, or past the head, does not count.
func TestUnitContinuationIn(t *testing.T) {
	for head, want := range map[string]bool{
		`{"continuation_token":"t","tool_results":[`:                                true,
		` {"tool_results":[{"call_id":"a","result":"x"}],"Continuation_Token":"t"}`: true,
		`{"code":"x","tools":[{"name":"continuation_token"}],"continuation_token"`:  true,
		`{"code":"{\"continuation_token\":1}","lang":"py"}`:                         false,
		`{"code":"print(1)","args":{"continuation_token":"t"}}`:                     false,
		`{"code":"` + strings.Repeat("x", 100) + ``:                                 false,
		`["continuation_token"]`:                                                    false,
		``:                                                                          false,
	} {
		if got := continuationIn([]byte(head)); got != want {
			t.Errorf("continuationIn(%.60q) = %v, want %v", head, got, want)
		}
	}
}
