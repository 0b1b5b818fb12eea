package api

// Behaviours the README promises that only a real server shows: per-user
// isolation with JWTs, admission control seen over HTTP, the compile
// cache's hit path.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/admission"
	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/golang-jwt/jwt/v5"
)

func (e *env) server() *Server { return e.srv.Config.Handler.(*Server) }

// uploadAs is upload with the caller's headers.
func (e *env) uploadAs(hdr []string, path string, fields map[string]string, parts ...part) *http.Response {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	for _, p := range parts {
		w, _ := mw.CreateFormFile(p.field, p.filename)
		w.Write(p.data)
	}
	mw.Close()
	return e.do("POST", path, &buf, append([]string{"Content-Type", mw.FormDataContentType()}, hdr...)...)
}

// until waits for cond, failing t after d.
func until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
	}
}

const jwtSecret = "jwt-secret-for-the-tests-0123456789abcdef"

// bearer is LibreChat's token for user sub: the Authorization header, with
// no API key.
func bearer(t *testing.T, sub string) []string {
	return bearerClaims(t, map[string]any{"sub": sub, "tenant_id": "t1"})
}

// bearerClaims is bearer with claims (sub, tenant_id) of the caller's choice.
func bearerClaims(t *testing.T, extra map[string]any) []string {
	c := jwt.MapClaims{"aud": "codeapi", "iss": "librechat", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return []string{"X-API-Key", "", "Authorization", "Bearer " + tok}
}

// TestJWTUsersSeeOnlyTheirOwnFiles: with JWTs, each user's uploads and
// outputs are visible to that user only (README). Bob holds the ids of
// Alice's files and tries every route with them.
func TestJWTUsersSeeOnlyTheirOwnFiles(t *testing.T) {
	if !onBackends(t, cold) { // storage and routing: the backend plays no part
		return
	}
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) {
		a.JWTSecret, a.Audience, a.Issuer = jwtSecret, "codeapi", "librechat"
	})
	alice, bob := bearer(t, "alice"), bearer(t, "bob")

	up := decode[uploadResult](t, e.uploadAs(alice, "/upload", map[string]string{"kind": "user", "id": "alice"}, part{"file", "diary.txt", []byte("alice's diary")}), 200)
	r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "py", "code": "open('out.txt','w').write('alice output')"}, alice...), 200)
	assertOK(t, r)
	out := fileNamed(r.Files, "out.txt")
	if len(up.Files) != 1 || out == nil {
		t.Fatalf("upload %+v, exec files %+v", up, r.Files)
	}
	files := []struct{ sid, id, name, content string }{
		{up.StorageSessionID, up.Files[0].FileID, "diary.txt", "alice's diary"},
		{r.SessionID, out.ID, "out.txt", "alice output"},
	}
	for _, f := range files {
		// Bob: nothing to see, read, inspect, delete or use.
		decode[map[string]string](t, e.do("GET", "/download/"+f.sid+"/"+f.id, nil, bob...), 404)
		decode[map[string]string](t, e.do("GET", "/sessions/"+f.sid+"/objects/"+f.id, nil, bob...), 404)
		for _, detail := range []string{"simple", "full", "normalized", "summary"} {
			if l := decode[[]any](t, e.do("GET", "/files/"+f.sid+"?detail="+detail, nil, bob...), 200); len(l) != 0 {
				t.Errorf("bob lists alice's %s: %v", f.name, l)
			}
		}
		decode[map[string]string](t, e.do("DELETE", "/files/"+f.sid+"/"+f.id, nil, bob...), 404)
		decode[map[string]string](t, e.do("DELETE", "/sessions/"+f.sid+"/objects/"+f.id, nil, bob...), 404)
		ref := map[string]any{"id": f.id, "storage_session_id": f.sid, "name": f.name, "kind": "user"}
		got := decode[map[string]string](t, e.post("/exec", map[string]any{"lang": "bash", "code": "cat " + f.name, "files": []any{ref}}, bob...), 403)
		if got["error"] != "Unauthorized file reference" {
			t.Errorf("bob using alice's %s: %v", f.name, got)
		}
		// Alice still has it, whole.
		resp := e.do("GET", "/download/"+f.sid+"/"+f.id, nil, alice...)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != f.content {
			t.Fatalf("alice's %s after bob's attempts: %d %q", f.name, resp.StatusCode, b)
		}
		if l := decode[[]any](t, e.do("GET", "/files/"+f.sid+"?detail=simple", nil, alice...), 200); len(l) != 1 {
			t.Errorf("alice lists %v", l)
		}
		r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "bash", "code": "cat " + f.name, "files": []any{ref}}, alice...), 200)
		if assertOK(t, r); r.Stdout != f.content {
			t.Errorf("alice using her %s: %q", f.name, r.Stdout)
		}
	}
	// The same for /v1 sessions.
	s := decode[v1Session](t, e.post("/v1/sessions", `{"language":"python"}`, alice...), http.StatusCreated)
	base := "/v1/sessions/" + s.SessionID
	decode[map[string]any](t, e.uploadAs(alice, base+"/files", nil, part{"file", "notes.txt", []byte("private")}), 200)
	decode[map[string]string](t, e.do("GET", base, nil, bob...), 404)
	decode[map[string]string](t, e.do("GET", base+"/files/notes.txt", nil, bob...), 404)
	decode[map[string]string](t, e.post(base+"/execute", `{"code":"print(open('notes.txt').read())"}`, bob...), 404)
	decode[map[string]string](t, e.do("DELETE", base, nil, bob...), 404)
	r = decode[execResult](t, e.post(base+"/execute", `{"code":"print(open('notes.txt').read())"}`, alice...), 200)
	if assertOK(t, r); r.Stdout != "private\n" {
		t.Fatalf("alice's session after bob's attempts: %q", r.Stdout)
	}
}

// TestAdmissionOverHTTP: time spent queued is not charged to the run, a
// full queue answers 429 with Retry-After, and a client that goes away
// frees its place in the queue and stops its running code.
func TestAdmissionOverHTTP(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t, func(_ *engine.Limits, a *auth.Config) { a.Keys = append(a.Keys, "second-key") })
	adm := admission.New(1, 1, 30*time.Second)
	e.server().Admission = adm

	// Queue time is not charged: B waits ~4 s behind A with a 2 s limit.
	aDone := make(chan execResult, 1)
	go func() {
		aDone <- decode[execResult](t, e.postIn(t, "/exec", map[string]any{"lang": "bash", "code": "sleep 4; echo a"}), 200)
	}()
	until(t, 20*time.Second, "A never ran", func() bool { return adm.Stats().Running == 1 })
	bDone := make(chan execResult, 1)
	go func() {
		bDone <- decode[execResult](t, e.postIn(t, "/exec", map[string]any{"lang": "bash", "code": "sleep 0.2; echo b", "timeout": 2000}), 200)
	}()
	until(t, 10*time.Second, "B never queued", func() bool { return adm.Stats().Queued == 1 })
	// The queue (1) is full: C is turned away at once, with a hint.
	resp := e.post("/exec", map[string]any{"lang": "py", "code": "print('c')"})
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	got := decode[map[string]any](t, resp, http.StatusTooManyRequests)
	if err != nil || ra < 1 || got["error"] != "rate_limited" || got["retry_after_seconds"] != float64(ra) {
		t.Fatalf("queue full: Retry-After %q, body %v", resp.Header.Get("Retry-After"), got)
	}
	if a := <-aDone; a.Stdout != "a\n" {
		t.Fatalf("A: %+v", a)
	}
	b := <-bDone
	if assertOK(t, b); b.Stdout != "b\n" || b.WallTimeMS >= 2000 {
		t.Fatalf("B, queued behind A, was charged its wait: %+v", b)
	}

	// A client that goes away while queued leaves the queue; one that goes
	// away while its code runs stops the code.
	post := func(ctx context.Context, code string) chan error {
		done := make(chan error, 1)
		go func() {
			body, _ := json.Marshal(map[string]any{"lang": "bash", "code": code})
			req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/exec", bytes.NewReader(body))
			req.Header.Set("X-API-Key", testKey)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		return done
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	running := post(runCtx, "touch started; sleep 60")
	until(t, 20*time.Second, "the long run never started", func() bool { return adm.Stats().Running == 1 })
	queueCtx, cancelQueued := context.WithCancel(context.Background())
	queued := post(queueCtx, "echo never")
	until(t, 10*time.Second, "the second run never queued", func() bool { return adm.Stats().Queued == 1 })
	cancelQueued()
	<-queued
	until(t, 5*time.Second, "a cancelled request kept its place in the queue", func() bool { return adm.Stats().Queued == 0 })
	until(t, 10*time.Second, "the long run's processes never appeared", func() bool { return len(e.sandboxProcesses()) > 0 })
	cancelRun()
	<-running
	until(t, 10*time.Second, "a cancelled run kept running", func() bool {
		return adm.Stats().Running == 0 && len(e.sandboxProcesses()) == 0
	})

	// Per-caller rate limits: the third run of a minute is refused with
	// Retry-After; another caller is not affected.
	e.server().Rates.Exec = admission.NewLimiter(admission.RateLimit{N: 2, Window: time.Minute})
	for i := 0; i < 2; i++ {
		e.ok(map[string]any{"lang": "bash", "code": "echo ok"})
	}
	resp = e.post("/exec", map[string]any{"lang": "bash", "code": "echo ok"})
	ra, err = strconv.Atoi(resp.Header.Get("Retry-After"))
	got = decode[map[string]any](t, resp, http.StatusTooManyRequests)
	if err != nil || ra < 1 || ra > 60 || got["error"] != "rate_limited" || got["retry_after_seconds"] != float64(ra) {
		t.Fatalf("rate limited: Retry-After %q, body %v", resp.Header.Get("Retry-After"), got)
	}
	r := decode[execResult](t, e.post("/exec", map[string]any{"lang": "bash", "code": "echo other"}, "X-API-Key", "second-key"), 200)
	if assertOK(t, r); r.Stdout != "other\n" {
		t.Fatalf("another caller: %q", r.Stdout)
	}
	e.server().Rates.Exec = nil
	e.assertClean()
}

// TestCompileCacheHitPath runs a compiled program twice: the second run is
// served from the compile cache (the cached program is not rewritten) and
// still gets its own arguments and stdin.
func TestCompileCacheHitPath(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "cc")
	cc, err := engine.OpenCompileCache(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	e.server().Engine.SetCompileCache(cc)
	code := "#include <stdio.h>\nint main(int c,char**v){char b[32]={0};fgets(b,32,stdin);printf(\"%s %s\\n\",v[1],b);return 0;}"
	inode := func() uint64 {
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("cache holds %d files, want 1", len(entries))
		}
		fi, err := os.Stat(filepath.Join(dir, entries[0].Name()))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	r := e.ok(map[string]any{"lang": "c", "code": code, "args": []string{"one"}, "stdin": "first"})
	if r.Stdout != "one first\n" {
		t.Fatalf("miss: %q", r.Stdout)
	}
	if n, _ := cc.Stats(); n != 1 {
		t.Fatalf("%d programs cached after a miss", n)
	}
	ino := inode()
	r = e.ok(map[string]any{"lang": "c", "code": code, "args": []string{"two"}, "stdin": "second"})
	if r.Stdout != "two second\n" || len(r.Files) != 0 {
		t.Fatalf("hit: stdout %q files %+v", r.Stdout, r.Files)
	}
	if n, _ := cc.Stats(); n != 1 || inode() != ino {
		t.Fatalf("the second run compiled again: %d programs, cached file replaced: %v", n, inode() != ino)
	}
	// A compile error is answered, and not cached.
	bad := e.exec(map[string]any{"lang": "c", "code": "int main(){ return nope; }"})
	if bad.Status != "error" || bad.ExitCode == 0 || bad.Stdout != "" || !bytes.Contains([]byte(bad.Stderr), []byte("‘nope’ undeclared")) {
		t.Fatalf("compile error: %+v", bad)
	}
	if n, _ := cc.Stats(); n != 1 {
		t.Fatalf("%d programs cached after a compile error", n)
	}
}
