package api

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/storage"
)

var urlSafeID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// TestHealthNeedsNoKey: /health answers anyone, but says only ok or
// degraded without a valid credential; the isolation details (uid ranges,
// cgroup paths) need the key. Fails with the details given to everyone.
func TestHealthNeedsNoKey(t *testing.T) {
	e := newEnv(t)
	for _, hdr := range [][]string{{"X-API-Key", ""}, {"X-API-Key", "wrong"}} {
		h := decode[map[string]any](t, e.do("GET", "/health", nil, hdr...), 200)
		if len(h) != 1 || h["status"] != "ok" {
			t.Fatalf("health with %v: %v", hdr, h)
		}
	}
	decode[map[string]any](t, e.do("GET", "/v1/health", nil, "X-API-Key", ""), 200)
	h := decode[map[string]any](t, e.do("GET", "/health", nil), 200)
	if iso, _ := h["isolation"].(map[string]any); h["status"] != "ok" || iso["uid_map"] == nil {
		t.Fatalf("health with the key: %v", h)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	body := `{"lang":"py","code":"print(1)"}`
	for name, hdr := range map[string][]string{
		"missing":      {"X-API-Key", ""},
		"wrong key":    {"X-API-Key", "nope"},
		"wrong bearer": {"X-API-Key", "", "Authorization", "Bearer nope"},
	} {
		resp := e.post("/exec", body, hdr...)
		got := decode[map[string]string](t, resp, http.StatusUnauthorized)
		if got["error"] == "" {
			t.Errorf("%s: no error message", name)
		}
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(testKey+":"))
	for _, hdr := range [][]string{{"X-API-Key", "", "Authorization", "Bearer " + testKey}, {"X-API-Key", "", "Authorization", basic}} {
		if r := decode[execResult](t, e.post("/exec", body, hdr...), 200); r.Stdout != "1\n" || r.Status != "ok" || r.Stderr != "" {
			t.Errorf("stdout %q", r.Stdout)
		}
	}
}

func TestExecPrint(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	for _, path := range []string{"/exec", "/v1/exec", "//exec", "/v1//exec"} {
		r := decode[execResult](t, e.post(path, map[string]any{"lang": "py", "code": "print(6*7)", "files": []any{}}), 200)
		assertOK(t, r)
		if r.Stdout != "42\n" {
			t.Fatalf("%s: %+v", path, r)
		}
		if !urlSafeID.MatchString(r.SessionID) || r.Files == nil || len(r.Files) != 0 {
			t.Fatalf("%s: session %q files %v", path, r.SessionID, r.Files)
		}
		if r.Language != "py" || !strings.HasPrefix(r.Version, "Python 3") || r.WallTimeMS <= 0 {
			t.Fatalf("%s: language %q version %q wall %d", path, r.Language, r.Version, r.WallTimeMS)
		}
	}
	if len(e.leftovers()) != 0 {
		t.Fatalf("left behind: %v", e.leftovers())
	}
}

func TestExecIgnoresUnknownFieldsAndNeverEchoesTheKey(t *testing.T) {
	e := newEnv(t)
	secret := "sk-legacy-" + storage.NewID()
	resp := e.post("/exec", `{"lang":"py","code":"print('hi')","user_id":"65f0aa","files":[],"LIBRECHAT_CODE_API_KEY":"`+secret+`","codeSessionKey":"execute_code","entity_id":"x","session_id":"whatever"}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || bytes.Contains(b, []byte(secret)) || !bytes.Contains(b, []byte(`"stdout":"hi\n"`)) {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

func TestExecUserErrorsAreOK(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.failed(map[string]any{"lang": "py", "code": "x = 1\nprint('before')\n1/0\n"}, "error", 1,
		"Traceback (most recent call last):\n  File \"/tmp/code/main.py\", line 3, in <module>\n    1/0\n    ~^~\nZeroDivisionError: division by zero\n")
	if r.Stdout != "before\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
	r = e.failed(map[string]any{"lang": "bash", "code": "echo out; echo err >&2; exit 3"}, "error", 3, "err\n")
	if r.Stdout != "out\n" {
		t.Fatalf("stdout %q", r.Stdout)
	}
}

// The notes the server appends to stderr when it stopped the code.
const (
	timeoutNote = "\n[codeexec] execution stopped: time limit exceeded\n"
	memoryNote  = "\n[codeexec] execution stopped: memory limit exceeded\n"
	outputNote  = "\n[codeexec] output truncated: output limit exceeded\n"
)

func TestExecTimeout(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	start := time.Now()
	// 4 s: the printed line must come out before the limit even where the
	// sandbox starts slowly (gVisor on a loaded machine).
	r := e.exec(map[string]any{"lang": "py", "code": "import time\nprint('start', flush=True)\ntime.sleep(30)", "timeout": 4000})
	if r.Status != "timeout" || r.Stdout != "start\n" || r.Stderr != timeoutNote || time.Since(start) > 20*time.Second {
		t.Fatalf("status %q stdout %q stderr %q after %v", r.Status, r.Stdout, r.Stderr, time.Since(start))
	}
}

// TestRequestTimeoutOnlyLowersTheLimit: a request's timeout above the
// server's wall-time limit does not raise it.
func TestRequestTimeoutOnlyLowersTheLimit(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.WallTime = 2 * time.Second })
	start := time.Now()
	r := e.exec(map[string]any{"lang": "bash", "code": "echo start; sleep 30; echo end", "timeout": 60000})
	if r.Status != "timeout" || r.Stdout != "start\n" || r.Stderr != timeoutNote || time.Since(start) > 15*time.Second {
		t.Fatalf("status %q stdout %q stderr %q after %v", r.Status, r.Stdout, r.Stderr, time.Since(start))
	}
	if r.WallTimeMS < 1900 || r.WallTimeMS > 5000 {
		t.Fatalf("stopped after %d ms under a 2 s limit and a 60 s request", r.WallTimeMS)
	}
}

func TestArgsAndStdin(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.ok(map[string]any{"lang": "py", "code": "import sys\nprint(sys.argv[1:])\nprint(sys.stdin.read().upper())", "args": []string{"a b", "--x"}, "stdin": "hello"})
	if r.Stdout != "['a b', '--x']\nHELLO\n" {
		t.Fatalf("%q %q", r.Stdout, r.Stderr)
	}
	r = e.ok(map[string]any{"lang": "bash", "code": `echo "$#:$1:$2"`, "args": []string{"one", "two words"}})
	if r.Stdout != "2:one:two words\n" {
		t.Fatalf("%q", r.Stdout)
	}
}

func TestBashHasPython(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	// LibreChat's own read_file helper runs exactly this shape.
	r := e.ok(map[string]any{"lang": "bash", "code": "python3 - <<'PY'\nimport os\nprint(os.getcwd())\nPY"})
	if r.Stdout != "/mnt/data\n" {
		t.Fatalf("%+v", r)
	}
}

// TestFileLifecycle follows a file through both client generations' refs:
// generated, downloaded, re-sent unchanged (inherited), modified
// (modified_from) and deleted (deleted_files).
func TestFileLifecycle(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r1 := e.ok(map[string]any{"lang": "py", "code": "import os\nos.makedirs('out', exist_ok=True)\nopen('out/report.txt','w').write('v1')\nopen('keep.csv','w').write('a,b\\n1,2\\n')\nopen('gone.txt','w').write('bye')"})
	if len(r1.Files) != 3 {
		t.Fatalf("files: %+v", r1.Files)
	}
	rep := fileNamed(r1.Files, "out/report.txt")
	if rep == nil || !urlSafeID.MatchString(rep.ID) || rep.StorageSessionID != r1.SessionID || rep.Inherited {
		t.Fatalf("report: %+v", rep)
	}
	if got := e.download(r1.SessionID, rep.ID); string(got) != "v1" {
		t.Fatalf("download %q", got)
	}
	keep, gone := fileNamed(r1.Files, "keep.csv"), fileNamed(r1.Files, "gone.txt")

	// Legacy refs for two files, a current ref for the third.
	refs := []map[string]any{
		{"id": rep.ID, "session_id": r1.SessionID, "name": "out/report.txt"},
		{"id": keep.ID, "session_id": r1.SessionID, "name": "keep.csv"},
		{"id": gone.ID, "resource_id": gone.ID, "storage_session_id": r1.SessionID, "name": "gone.txt", "kind": "user"},
	}
	r2 := e.ok(map[string]any{"lang": "py", "files": refs, "code": "import os\nprint(open('out/report.txt').read(), open('keep.csv').read().count(','))\nopen('out/report.txt','a').write('+v2')\nos.remove('gone.txt')"})
	if r2.Stdout != "v1 2\n" || r2.SessionID == r1.SessionID {
		t.Fatalf("%+v", r2)
	}
	if len(r2.Files) != 2 || strings.Join(r2.DeletedFiles, ",") != "gone.txt" {
		t.Fatalf("files %+v deleted %v", r2.Files, r2.DeletedFiles)
	}
	mod := fileNamed(r2.Files, "out/report.txt")
	if mod == nil || mod.Inherited || mod.ID == rep.ID || mod.StorageSessionID != r2.SessionID ||
		mod.ModifiedFrom == nil || mod.ModifiedFrom.ID != rep.ID || mod.ModifiedFrom.StorageSessionID != r1.SessionID {
		t.Fatalf("modified: %+v", mod)
	}
	if got := e.download(r2.SessionID, mod.ID); string(got) != "v1+v2" {
		t.Fatalf("download %q", got)
	}
	inh := fileNamed(r2.Files, "keep.csv")
	if inh == nil || !inh.Inherited || inh.ID != keep.ID || inh.StorageSessionID != r1.SessionID {
		t.Fatalf("inherited: %+v", inh)
	}
	// The original is untouched.
	if got := e.download(r1.SessionID, rep.ID); string(got) != "v1" {
		t.Fatalf("original changed: %q", got)
	}
}

func TestUploadThenUse(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	csv := []byte("x,y\n1,2\n3,4\n")
	// Legacy: entity_id then file; current: kind, id then file.
	for _, fields := range []map[string]string{{"entity_id": "agent_1"}, {"kind": "user", "id": "65f0aa"}} {
		up := decode[uploadResult](t, e.upload("/upload", fields, part{"file", "data/in put.csv", csv}), 200)
		if up.Message != "success" || up.SessionID == "" || up.SessionID != up.StorageSessionID || len(up.Files) != 1 ||
			up.Files[0].Filename != "data/in put.csv" || !urlSafeID.MatchString(up.Files[0].FileID) {
			t.Fatalf("upload: %+v", up)
		}
		ref := map[string]any{"id": up.Files[0].FileID, "name": "data/in put.csv"}
		if fields["kind"] != "" {
			ref["storage_session_id"], ref["kind"], ref["resource_id"] = up.StorageSessionID, "user", "65f0aa"
		} else {
			ref["session_id"] = up.SessionID
		}
		r := e.ok(map[string]any{"lang": "py", "files": []any{ref}, "code": "print(sum(int(l.split(',')[1]) for l in open('data/in put.csv').read().split()[1:]))"})
		if r.Stdout != "6\n" || len(r.Files) != 1 || !r.Files[0].Inherited || r.Files[0].ID != up.Files[0].FileID {
			t.Fatalf("%+v", r)
		}
	}
}

func TestUploadBatchAndListing(t *testing.T) {
	e := newEnv(t)
	up := decode[uploadResult](t, e.upload("/upload/batch", map[string]string{"kind": "skill", "id": "sk1", "read_only": "true"},
		part{"file", "SKILL.md", []byte("# skill")}, part{"file", "lib/util.py", []byte("X = 5")}, part{"file", "../evil", []byte("x")}), 200)
	if up.Message != "partial_success" || up.Succeeded != 2 || up.Failed != 1 || len(up.Files) != 3 || up.StorageSessionID == "" {
		t.Fatalf("batch: %+v", up)
	}
	sid := up.StorageSessionID

	simple := decode[[]string](t, e.do("GET", "/files/"+sid+"?detail=simple", nil), 200)
	if len(simple) != 2 {
		t.Fatalf("simple: %v", simple)
	}
	for _, n := range simple {
		if !strings.HasPrefix(n, sid+"/") {
			t.Fatalf("simple name %q", n)
		}
	}
	full := decode[[]map[string]any](t, e.do("GET", "/files/"+sid+"?detail=full", nil), 200)
	names := map[string]string{}
	for _, f := range full {
		md := f["metadata"].(map[string]any)
		// Legacy clients derive the id as name.split('/')[1].split('.')[0].
		id := strings.SplitN(strings.Split(f["name"].(string), "/")[1], ".", 2)[0]
		names[md["original-filename"].(string)] = id
		if _, err := time.Parse(time.RFC3339, f["lastModified"].(string)); err != nil {
			t.Fatalf("lastModified: %v", err)
		}
	}
	if len(names) != 2 || names["lib/util.py"] == "" {
		t.Fatalf("full: %v", full)
	}
	norm := decode[[]map[string]any](t, e.do("GET", "/files/"+sid+"?detail=normalized", nil), 200)
	if len(norm) != 2 || norm[0]["read_only"] != true || norm[0]["storage_session_id"] != sid {
		t.Fatalf("normalized: %v", norm)
	}
	summary := decode[[]map[string]any](t, e.do("GET", "/v1/files/"+sid+"?detail=summary", nil), 200)
	if len(summary) != 2 || summary[0]["size"] == nil {
		t.Fatalf("summary: %v", summary)
	}
	if empty := decode[[]any](t, e.do("GET", "/files/"+storage.NewID()+"?detail=summary", nil), 200); len(empty) != 0 {
		t.Fatalf("unknown session: %v", empty)
	}

	// A read-only input modified by the code is still echoed as inherited.
	r := e.ok(map[string]any{"lang": "py", "files": []any{
		map[string]any{"id": names["lib/util.py"], "storage_session_id": sid, "name": "lib/util.py", "kind": "skill"},
	}, "code": "from lib.util import X\nprint(X)\ntry:\n  open('lib/util.py','w').write('X = 6')\nexcept OSError as e:\n  print('ro')"})
	if r.Stdout != "5\nro\n" && r.Stdout != "5\n" || len(r.Files) != 1 || !r.Files[0].Inherited {
		t.Fatalf("%+v", r)
	}

	info := decode[map[string]any](t, e.do("GET", "/sessions/"+sid+"/objects/"+names["SKILL.md"]+"?kind=skill&id=sk1", nil), 200)
	if info["originalFilename"] != "SKILL.md" || info["lastModified"] == nil || info["size"] != float64(7) {
		t.Fatalf("object info: %v", info)
	}
	decode[map[string]string](t, e.do("DELETE", "/sessions/"+sid+"/objects/"+names["SKILL.md"], nil), 200)
	decode[map[string]string](t, e.do("DELETE", "/files/"+sid+"/"+names["SKILL.md"], nil), 404)
	decode[map[string]string](t, e.do("DELETE", "/files/"+sid+"/"+names["lib/util.py"], nil), 200)
	decode[map[string]string](t, e.do("GET", "/download/"+sid+"/"+names["lib/util.py"], nil), 404)
	decode[map[string]string](t, e.do("GET", "/sessions/"+sid+"/objects/nope", nil), 404)
}

func TestUploadRejects(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"../../etc/passwd", "/abs", "a/../b", ""} {
		got := decode[map[string]string](t, e.upload("/upload", nil, part{"file", name, []byte("x")}), 400)
		if got["error"] == "" {
			t.Errorf("%q: no error", name)
		}
	}
	big := make([]byte, 5<<20)
	rand.Read(big)
	decode[map[string]string](t, e.upload("/upload", nil, part{"file", "big.bin", big}), 413)
	decode[map[string]string](t, e.post("/upload", `{"not":"multipart"}`), 400)
	decode[map[string]string](t, e.upload("/upload", map[string]string{"kind": "user"}), 400)
	// Nothing of the refused uploads was kept.
	if objs, _ := e.store.Sweep(t.Context(), time.Now().Add(time.Hour)); objs != 0 {
		t.Fatalf("%d refused uploads were stored", objs)
	}
}

func TestExecutionProfile(t *testing.T) {
	e := newEnv(t)
	resp := e.post("/exec", `{"lang":"py","code":"print(1)"}`, "X-CodeAPI-Expected-Profile", "default")
	if resp.Header.Get("X-CodeAPI-Execution-Profile") != "default" {
		t.Fatalf("profile header %q", resp.Header.Get("X-CodeAPI-Execution-Profile"))
	}
	decode[execResult](t, resp, 200)
	got := decode[map[string]string](t, e.post("/exec", `{"lang":"py","code":"print(1)"}`, "X-CodeAPI-Expected-Profile", "gpu"), 409)
	if got["error"] != "execution_profile_mismatch" {
		t.Fatalf("%v", got)
	}
}

func TestOutputTruncation(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.MaxOutputFiles = 5; l.CollectFileBytes = 1 << 20 })
	r := e.ok(map[string]any{"lang": "py", "code": "for i in range(8):\n  open(f'f{i}.txt','w').write(str(i))\nopen('big.bin','wb').write(b'x'*(2<<20))"})
	if len(r.Files) != 5 || r.ArtifactTruncation == nil || r.ArtifactTruncation.Reasons["max_files"] != 3 || r.ArtifactTruncation.Reasons["size"] != 1 ||
		r.ArtifactTruncation.SkippedCount != 4 || r.ArtifactTruncation.Code != "artifact_truncated" {
		t.Fatalf("%+v %+v", r.Files, r.ArtifactTruncation)
	}
}

func TestLanguagesEndpoint(t *testing.T) {
	e := newEnv(t)
	langs := decode[[]languageOut](t, e.do("GET", "/v1/languages", nil), 200)
	seen := map[string]languageOut{}
	for _, l := range langs {
		seen[l.ID] = l
	}
	if !seen["py"].Available || !strings.HasPrefix(seen["py"].Version, "Python 3") || !seen["bash"].Available {
		t.Fatalf("%+v", langs)
	}
}

func TestManySmallExecutionsLeaveNothing(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	for i := 0; i < 5; i++ {
		r := e.ok(map[string]any{"lang": "bash", "code": fmt.Sprintf("echo %d > n.txt; sleep 100 & disown; echo ok", i)})
		if r.Stdout != "ok\n" || len(r.Files) != 1 {
			t.Fatalf("%+v", r)
		}
	}
	if l := e.leftovers(); len(l) != 0 {
		t.Fatalf("left behind: %v", l)
	}
}

func TestReadyRunsACanary(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	if got := decode[map[string]string](t, e.do("GET", "/ready", nil, "X-API-Key", ""), 200); got["status"] != "ready" || len(got) != 1 {
		t.Fatalf("%v", got)
	}
}

// TestReadyFailsWhenTheSandboxIsBroken breaks the real sandbox (its run
// directory becomes unusable): /health stays cheap and green, /ready must not.
func TestReadyFailsWhenTheSandboxIsBroken(t *testing.T) {
	e := newEnv(t)
	s := e.srv.Config.Handler.(*Server)
	if s.ReadyTTL != 5*time.Second {
		t.Fatalf("the canary's verdict is cached %v, the README says 5 s", s.ReadyTTL)
	}
	decode[map[string]string](t, e.do("GET", "/ready", nil), 200)
	entries, _ := os.ReadDir(e.runDir)
	for _, d := range entries {
		if d.IsDir() {
			os.Chmod(filepath.Join(e.runDir, d.Name()), 0)
			t.Cleanup(func() { os.Chmod(filepath.Join(e.runDir, d.Name()), 0o711) })
		}
	}
	os.Chmod(e.runDir, 0)
	t.Cleanup(func() { os.Chmod(e.runDir, 0o711) })
	// Within the 5 s the cached verdict stands (no canary runs); past them
	// the canary runs again and sees the breakage. The verdict's age is
	// set rather than waited for.
	setAge := func(d time.Duration) {
		s.readyMu.Lock()
		s.readyAt = time.Now().Add(-d)
		s.readyMu.Unlock()
	}
	setAge(4 * time.Second)
	decode[map[string]string](t, e.do("GET", "/ready", nil), 200)
	setAge(5*time.Second + 100*time.Millisecond)
	got := decode[map[string]string](t, e.do("GET", "/ready", nil), 503)
	if got["status"] != "unavailable" || got["error"] == "" {
		t.Fatalf("%v", got)
	}
	decode[map[string]any](t, e.do("GET", "/health", nil), 200)
}

func TestParseTimeout(t *testing.T) {
	for _, c := range []struct {
		in   string
		unit time.Duration
		want time.Duration
		ok   bool
	}{
		{"", time.Millisecond, 0, true},
		{"1500", time.Millisecond, 1500 * time.Millisecond, true},
		{"2.5", time.Second, 2500 * time.Millisecond, true},
		{"1e300", time.Millisecond, 24 * time.Hour, true}, // would overflow int64 nanoseconds
		{"-5", time.Millisecond, 0, false},
	} {
		got, err := parseTimeout(json.Number(c.in), c.unit, "units")
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%q: %v %v", c.in, got, err)
		}
	}
	e := newEnv(t)
	decode[map[string]string](t, e.post("/exec", `{"lang":"py","code":"1","timeout":-5}`), 400)
}
