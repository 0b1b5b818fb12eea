package api

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type v1Session struct {
	SessionID string `json:"session_id"`
	Language  string `json:"language"`
	CreatedAt string `json:"created_at"`
	ExpiresAt string `json:"expires_at"`
	Files     []struct {
		Path     string `json:"path"`
		Size     int64  `json:"size"`
		Modified string `json:"modified"`
	} `json:"files"`
}

type v1Exec struct {
	execResult
	DurationMS *int64 `json:"duration_ms"`
}

// TestSessionsAPI walks the integration guide's table end to end. The
// subdirectory is listed with the shell's glob, not ls: Debian 12's runsc
// rejects the statx flags coreutils pass (README, gVisor backend), which
// is no fault of the sessions API.
func TestSessionsAPI(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	s := decode[v1Session](t, e.post("/v1/sessions", `{"language":"python"}`), http.StatusCreated)
	if !urlSafeID.MatchString(s.SessionID) || s.Language != "py" || s.ExpiresAt <= s.CreatedAt {
		t.Fatalf("create: %+v", s)
	}
	base := "/v1/sessions/" + s.SessionID

	up := decode[map[string]any](t, e.upload(base+"/files", nil,
		part{"files", "data.csv", []byte("n\n1\n2\n3\n")}, part{"file", "notes/a.txt", []byte("note")}), 200)
	if len(up["files"].([]any)) != 2 {
		t.Fatalf("upload: %v", up)
	}

	// stdin, the session's files in the working directory, a new file.
	r := decode[v1Exec](t, e.post(base+"/execute", `{"code":"import sys\nrows=open('data.csv').read().split()[1:]\nprint(sum(map(int,rows)), sys.stdin.read())\nopen('result.txt','w').write('six')","stdin":"from-stdin"}`), 200)
	if r.Stdout != "6 from-stdin\n" || r.ExitCode != 0 || r.Status != "ok" || r.DurationMS == nil || r.SessionID != s.SessionID {
		t.Fatalf("execute: %+v", r)
	}
	// What the code wrote persists; a language override runs bash; exit codes come back.
	r = decode[v1Exec](t, e.post(base+"/execute", `{"language":"bash","code":"cat result.txt; echo; cd notes; echo *; cd ..; rm notes/a.txt; echo changed > data.csv; exit 4"}`), 200)
	if r.Stdout != "six\na.txt\n" || r.ExitCode != 4 || r.Status != "error" {
		t.Fatalf("execute bash: %+v", r)
	}
	got := decode[v1Session](t, e.do("GET", base, nil), 200)
	paths := []string{}
	for _, f := range got.Files {
		paths = append(paths, f.Path)
	}
	if strings.Join(paths, ",") != "data.csv,result.txt" && strings.Join(paths, ",") != "result.txt,data.csv" || len(got.Files) != 2 {
		t.Fatalf("files after runs: %v", paths)
	}

	resp := e.do("GET", base+"/files/data.csv", nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "changed\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("download: %d %q %q", resp.StatusCode, b, resp.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/files/..%2f..%2fetc%2fpasswd", "/files/%2Fetc%2Fpasswd"} {
		if resp := e.do("GET", base+p, nil); resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Fatalf("traversal %s: %d", p, resp.StatusCode)
		}
	}
	decode[map[string]string](t, e.do("GET", base+"/files/nope.txt", nil), 404)
	decode[map[string]string](t, e.post(base+"/execute", `{"code":"print(1)","language":"cobol"}`), 400)

	decode[map[string]any](t, e.do("DELETE", base, nil), 200)
	decode[map[string]string](t, e.do("GET", base, nil), 404)
	decode[map[string]string](t, e.post(base+"/execute", `{"code":"print(1)"}`), 404)
	decode[map[string]string](t, e.do("GET", base+"/files/data.csv", nil), 404)
	decode[map[string]string](t, e.do("DELETE", base, nil), 404)
	decode[map[string]string](t, e.post("/v1/sessions", `{"language":"cobol"}`), 400)
}

// TestSessionsTimeoutIsInSeconds: /v1's timeout is in seconds (the
// LibreChat API's is in milliseconds): 5 lets a short run finish (as
// milliseconds it would not start) and stops a 30 s one after about 5 s.
func TestSessionsTimeoutIsInSeconds(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	s := decode[v1Session](t, e.post("/v1/sessions", `{"language":"python"}`), http.StatusCreated)
	base := "/v1/sessions/" + s.SessionID
	r := decode[v1Exec](t, e.post(base+"/execute", `{"code":"import time\ntime.sleep(0.1)\nprint('slept')","timeout":5}`), 200)
	if assertOK(t, r.execResult); r.Stdout != "slept\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	start := time.Now()
	r = decode[v1Exec](t, e.post(base+"/execute", `{"code":"import time\nprint('start', flush=True)\ntime.sleep(30)","timeout":5}`), 200)
	if r.Status != "timeout" || r.Stdout != "start\n" || r.Stderr != timeoutNote || r.DurationMS == nil || *r.DurationMS < 4900 || time.Since(start) > 20*time.Second {
		t.Fatalf("status %q stdout %q stderr %q duration %v after %v", r.Status, r.Stdout, r.Stderr, r.DurationMS, time.Since(start))
	}
}
