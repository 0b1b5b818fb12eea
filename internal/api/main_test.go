package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/ptc"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/storage"
)

// The sandbox re-executes the test binary as its init.
func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	os.Exit(m.Run())
}

const testKey = "test-key-0123456789"

// testBackend is the sandbox newEnv builds: CODEEXEC_TEST_SANDBOX (native,
// the default, or gvisor).
func testBackend() string { return os.Getenv("CODEEXEC_TEST_SANDBOX") }

// TestAttacksUnderGVisor runs the attack suite (TestAttack*) again with the
// gVisor backend, in a child process of this test binary, so that
// `go test -run Attack` covers both backends. Without runsc it skips,
// except in CI.
func TestAttacksUnderGVisor(t *testing.T) {
	if testBackend() != "" {
		t.Skip("this run already chose a backend")
	}
	if _, err := exec.LookPath("runsc"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the gVisor attack suite needs root and runsc (Debian package runsc)")
		}
		t.Skip("needs root and runsc")
	}
	args := []string{"-test.run=^TestAttack", "-test.skip=^TestAttacksUnderGVisor$", "-test.count=1",
		"-test.timeout=5m", fmt.Sprintf("-test.v=%v", testing.Verbose()), fmt.Sprintf("-test.short=%v", testing.Short())}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CODEEXEC_TEST_SANDBOX=gvisor")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if testing.Verbose() {
		cmd.Stdout = io.MultiWriter(&out, os.Stdout)
		cmd.Stderr = cmd.Stdout
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("attack suite under gVisor: %v\n%s", err, out.Bytes())
	}
}

// gvisorProcesses lists host processes of a gVisor backend's sandboxes:
// those in its slots' cgroups (gofers, sentries, stubs) and runsc
// processes working under its run directory.
func (e *env) gvisorProcesses() []string {
	cg, _ := e.box.Describe()["cgroup"].(map[string]any)
	base, _ := cg["path"].(string)
	if base == "" {
		e.t.Fatal("gvisor backend describes no cgroup path")
	}
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cgroups, _ := os.ReadFile(d + "/cgroup")
		cmdline, _ := os.ReadFile(d + "/cmdline")
		if bytes.Contains(cgroups, []byte(":"+base+"/s")) || bytes.Contains(cmdline, []byte(e.runDir)) {
			out = append(out, d+" "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// env is a real server: real sandbox, real local storage, real HTTP.
type env struct {
	t       testing.TB
	srv     *httptest.Server
	store   storage.Store
	box     sandbox.Sandbox
	storDir string
	runDir  string
}

type envOption func(*engine.Limits, *auth.Config)

// newEnv starts a server with test-sized limits, changed by opts.
func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	return newEnvWarm(t, os.Getenv("CODEEXEC_TEST_WARM") == "1", opts...)
}

// newEnvWarm is newEnv with the warm pool on or off, whatever
// CODEEXEC_TEST_WARM says.
func newEnvWarm(t testing.TB, warm bool, opts ...envOption) *env {
	t.Helper()
	runDir, err := os.MkdirTemp("", "codeexec-run-")
	if err != nil {
		t.Fatal(err)
	}
	// The sandbox's init (an unprivileged host uid) must traverse it.
	os.Chmod(runDir, 0o711)
	storDir := t.TempDir()
	store, err := storage.OpenLocal(storDir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	limits := engine.Limits{
		WallTime: 20 * time.Second, CPUTime: 10 * time.Second, MemoryBytes: 256 << 20, Pids: 64,
		OutputBytes: 1 << 20, DiskBytes: 64 << 20, FileBytes: 8 << 20, MaxOutputFiles: 50, MaxInputFiles: 64,
	}
	ac := auth.Config{Keys: []string{testKey}}
	for _, o := range opts {
		o(&limits, &ac)
	}
	lc := sandbox.LinuxConfig{RunDir: runDir, Slots: 4, Logger: log}
	// CODEEXEC_TEST_WARM=1 serves single-step runs from the warm pool (the
	// suite then attacks the warm path): Python in forked templates, bash
	// and the other languages spawned from warm children.
	if warm && testBackend() != "gvisor" {
		py, _ := lang.Lookup("py")
		lc.Warm = sandbox.WarmConfig{Python: 2, Env: engine.StepEnv(py),
			Limits: sandbox.Limits{MemoryBytes: limits.MemoryBytes, Pids: limits.Pids}}
	}
	var box sandbox.Sandbox
	if testBackend() == "gvisor" {
		g, err := sandbox.NewGVisor(sandbox.GVisorConfig{LinuxConfig: lc})
		if err != nil {
			t.Fatal(err)
		}
		box = g
	} else {
		l, err := sandbox.NewLinux(lc)
		if err != nil {
			t.Fatal(err)
		}
		if lc.Warm.Python > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			err := l.WaitWarm(ctx)
			cancel()
			if err != nil {
				l.Close()
				t.Fatal(err)
			}
		}
		box = l
	}
	authn, err := auth.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(store, box, limits, log)
	progs := ptc.New(eng, store, ptc.Config{PauseTimeout: 3 * time.Second, Log: log})
	h := NewServer(Deps{Engine: eng, Store: store, Box: box, Auth: authn, Log: log, Limits: Limits{MaxUploadBytes: 4 << 20}, PTC: progs})
	e := &env{t: t, srv: httptest.NewServer(h), store: store, box: box, storDir: storDir, runDir: runDir}
	t.Cleanup(func() {
		e.srv.Close()
		progs.Close()
		box.Close()
		store.Close()
		os.RemoveAll(runDir)
	})
	return e
}

// do sends a request with the test key unless headers say otherwise.
func (e *env) do(method, path string, body io.Reader, headers ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", testKey)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// decode reads a JSON response, asserting its status.
func decode[T any](t testing.TB, resp *http.Response, status int) T {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// execResult is an /exec answer as the server encodes it.
type execResult = execResponse

// exec runs a body (a map or a raw JSON string) and expects 200.
func (e *env) exec(body any) execResult {
	e.t.Helper()
	return decode[execResult](e.t, e.post("/exec", body), http.StatusOK)
}

func (e *env) post(path string, body any, headers ...string) *http.Response {
	e.t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	return e.do("POST", path, bytes.NewReader(b), append([]string{"Content-Type", "application/json"}, headers...)...)
}

type part struct {
	field, filename string
	data            []byte
}

// upload sends a multipart body to path.
func (e *env) upload(path string, fields map[string]string, parts ...part) *http.Response {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	for _, p := range parts {
		h := make(map[string][]string)
		h["Content-Disposition"] = []string{`form-data; name="` + p.field + `"; filename="` + strings.ReplaceAll(p.filename, `"`, `\"`) + `"`}
		h["Content-Type"] = []string{"application/octet-stream"}
		w, _ := mw.CreatePart(h)
		w.Write(p.data)
	}
	mw.Close()
	return e.do("POST", path, &buf, "Content-Type", mw.FormDataContentType())
}

type uploadResult struct {
	Message          string         `json:"message"`
	SessionID        string         `json:"session_id"`
	StorageSessionID string         `json:"storage_session_id"`
	Files            []uploadedFile `json:"files"`
	Succeeded        int            `json:"succeeded"`
	Failed           int            `json:"failed"`
}

func (e *env) download(sid, fid string) []byte {
	e.t.Helper()
	resp := e.do("GET", "/download/"+sid+"/"+fid, nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		e.t.Fatalf("download %s/%s: %d %s", sid, fid, resp.StatusCode, b)
	}
	return b
}

// leftovers lists what remains in the run directory's work area.
func (e *env) leftovers() []string {
	var out []string
	filepath.Walk(e.runDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() && (info.Name() == "rootfs" || info.Name() == "helper") {
			// The gVisor backend's root, kept while it lives; the warm
			// templates' compiled helper, kept for the next start.
			return filepath.SkipDir
		}
		if err == nil && !info.IsDir() && !strings.HasSuffix(p, ".lock") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func fileNamed(files []fileOut, name string) *fileOut {
	for i := range files {
		if files[i].Name == name {
			return &files[i]
		}
	}
	return nil
}
