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
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/ptc"
	"github.com/codeexec/codeexec/internal/sandbox"
	gvisorbox "github.com/codeexec/codeexec/internal/sandbox/gvisor"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/native"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	warmpool "github.com/codeexec/codeexec/internal/sandbox/warm"
	"github.com/codeexec/codeexec/internal/storage"
	"github.com/codeexec/codeexec/internal/testenv"
)

// The sandbox re-executes the test binary as its init.
func TestMain(m *testing.M) {
	nsinit.MaybeInit()
	os.Exit(m.Run())
}

const testKey = "test-key-0123456789"

// backend is a sandbox configuration the API's behaviour must hold on.
type backend string

const (
	cold   backend = "cold"   // the native sandbox, every run spawned afresh
	warm   backend = "warm"   // the native sandbox with the warm pool
	gvisor backend = "gvisor" // the gVisor backend
)

var allBackends = []backend{cold, warm, gvisor}

// testBackend is the backend newEnv builds: CODEEXEC_TEST_SANDBOX (cold,
// the default; warm; gvisor). CODEEXEC_TEST_WARM=1 is the older spelling
// of warm.
func testBackend() backend {
	switch v := os.Getenv("CODEEXEC_TEST_SANDBOX"); v {
	case "", "cold", "native":
		if os.Getenv("CODEEXEC_TEST_WARM") == "1" {
			return warm
		}
		return cold
	default:
		return backend(v)
	}
}

// backendChosen reports whether this process runs one backend only: a
// child of onBackends, or a person's choice.
func backendChosen() bool {
	return os.Getenv("CODEEXEC_TEST_SANDBOX") != "" || os.Getenv("CODEEXEC_TEST_WARM") == "1"
}

// onBackends declares the backends test t must hold on; it replaces a
// hand-kept list of tests to re-run. In a plain `go test` it runs t again
// on each declared backend other than this process's own, each as a
// subtest (t/warm, t/gvisor) in a child process of the test binary, and
// reports whether t's body is to run here too. In a process that chose its
// backend, t runs only if it declared it.
func onBackends(t *testing.T, bs ...backend) bool {
	t.Helper()
	own := testBackend()
	declared.Store(t.Name(), true)
	if backendChosen() {
		if !slices.Contains(bs, own) {
			// Not a gap: the test did not claim this backend.
			t.Skipf("not declared for the %s backend", own)
		}
		return true
	}
	for _, b := range bs {
		if b != own {
			t.Run(string(b), func(t *testing.T) { runOnBackend(t, b) })
		}
	}
	return slices.Contains(bs, own)
}

// declared holds the tests that called onBackends: on a chosen backend
// other than cold, newEnv skips the others (they claim only cold).
var declared sync.Map

// runOnBackend runs the top-level test of t in a child process on backend b.
func runOnBackend(t *testing.T, b backend) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "the sandbox backends need root")
	}
	if _, err := exec.LookPath("runsc"); err != nil && b == gvisor {
		testenv.Skip(t, "runsc is not installed (Debian package runsc, scripts/packages.txt)")
	}
	name, _, _ := strings.Cut(t.Name(), "/")
	args := []string{"-test.run=^" + regexp.QuoteMeta(name) + "$", "-test.count=1", "-test.v=true",
		"-test.timeout=10m", fmt.Sprintf("-test.short=%v", testing.Short())}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CODEEXEC_TEST_SANDBOX="+string(b))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		t.Fatalf("%s on the %s backend: %v\n%s", name, b, err, out.Bytes())
	}
	// A child whose filter matched nothing also exits 0: insist it ran.
	if !bytes.Contains(out.Bytes(), []byte("--- PASS: "+name+" ")) {
		t.Fatalf("%s did not pass on the %s backend:\n%s", name, b, out.Bytes())
	}
	if testing.Verbose() {
		t.Logf("%s", out.Bytes())
	}
}

// gvisorProcesses lists host processes of a gVisor backend's sandboxes:
// those in its slots' cgroups (gofers, sentries, stubs) and runsc
// processes working under its run directory.
func (e *env) gvisorProcesses() []string {
	base := e.box.Describe().Cgroup.Path
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
	quota   *storage.Quota
	box     sandbox.Sandbox
	storDir string
	runDir  string
}

type envOption func(*engine.Limits, *auth.Config)

// boxWrappers holds, per test, a decorator the next newEnv applies to its
// sandbox before the engine gets it (the network tests' egress layer).
var boxWrappers sync.Map // testing.TB -> func(sandbox.Sandbox) sandbox.Sandbox

// newEnv starts a server with test-sized limits, changed by opts.
func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	if top, _, _ := strings.Cut(t.Name(), "/"); backendChosen() && testBackend() != cold {
		if _, ok := declared.Load(top); !ok {
			t.Skipf("%s declares no backends: it holds on cold only", top)
		}
	}
	return newEnvOn(t, testBackend(), opts...)
}

// newEnvOn is newEnv on backend b, whatever the test run chose (for tests
// that compare two backends in one run).
func newEnvOn(t testing.TB, b backend, opts ...envOption) *env {
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
		OutputBytes: 1 << 20, DiskBytes: 64 << 20, CollectFileBytes: 8 << 20, MaxOutputFiles: 50, MaxInputFiles: 64,
	}
	ac := auth.Config{Keys: []string{testKey}}
	for _, o := range opts {
		o(&limits, &ac)
	}
	lc := host.Config{RunDir: runDir, Slots: 4, Logger: log, Etc: lang.Etc()}
	var wc warmpool.Config
	// CODEEXEC_TEST_WARM=1 serves single-step runs from the warm pool (the
	// suite then attacks the warm path): Python in forked templates, bash
	// and the other languages spawned from warm children.
	if b == warm {
		py, _ := lang.WarmLanguage("python")
		wc = warmpool.Config{Python: 2, Template: py.Warm, Interpreter: py.Run[0], Env: engine.StepEnv(py),
			Preload: lang.PythonPreload, ImportsBeyond: lang.PythonImportsBeyond,
			Limits: sandbox.Limits{MemoryBytes: limits.MemoryBytes, Pids: limits.Pids}}
	}
	var box sandbox.Sandbox
	if b == gvisor {
		g, err := gvisorbox.New(gvisorbox.Config{Config: lc})
		if err != nil {
			t.Fatal(err)
		}
		box = g
	} else {
		base, err := native.New(lc)
		if err != nil {
			t.Fatal(err)
		}
		l, err := warmpool.New(base, wc)
		if err != nil {
			base.Close()
			t.Fatal(err)
		}
		if wc.Python > 0 {
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
	if wrap, ok := boxWrappers.LoadAndDelete(t); ok {
		box = wrap.(func(sandbox.Sandbox) sandbox.Sandbox)(box)
	}
	authn, err := auth.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	// Without limits until a test sets them: every write is counted.
	quota := storage.NewQuota(store, storage.QuotaConfig{})
	eng := engine.New(quota, box, limits, log)
	progs := ptc.New(eng, quota, ptc.Config{PauseTimeout: 3 * time.Second, Log: log})
	h := NewServer(Deps{Engine: eng, Store: quota, Box: box, Auth: authn, Log: log, Limits: Limits{MaxUploadBytes: 4 << 20}, PTC: progs, Quota: quota})
	e := &env{t: t, srv: httptest.NewServer(h), store: store, quota: quota, box: box, storDir: storDir, runDir: runDir}
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
	return e.doIn(e.t, method, path, body, headers...)
}

func (e *env) doIn(t testing.TB, method, path string, body io.Reader, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
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
		t.Fatal(err)
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

// ok runs a body that must succeed: 200, status ok, exit code 0 and an
// empty stderr (a warning, a traceback caught and printed, a sandbox
// complaint such as "Bad file descriptor" all fail it).
func (e *env) ok(body any) execResult {
	e.t.Helper()
	return e.okIn(e.t, body)
}

// okIn is ok reporting to t (a subtest).
func (e *env) okIn(t testing.TB, body any) execResult {
	t.Helper()
	r := decode[execResult](t, e.postIn(t, "/exec", body), http.StatusOK)
	assertOK(t, r)
	return r
}

// assertOK fails t unless r is a clean success.
func assertOK(t testing.TB, r execResult) {
	t.Helper()
	if r.Status != "ok" || r.ExitCode != 0 || r.Stderr != "" {
		t.Fatalf("want status ok, exit 0, empty stderr; got status %q exit %d stderr %q stdout %q", r.Status, r.ExitCode, r.Stderr, truncateString(r.Stdout, 500))
	}
}

// failed runs a body expected to fail with exactly status, exit code and
// stderr.
func (e *env) failed(body any, status string, exit int, stderr string) execResult {
	e.t.Helper()
	r := e.exec(body)
	if r.Status != status || r.ExitCode != exit || r.Stderr != stderr {
		e.t.Fatalf("want status %q exit %d stderr %q; got status %q exit %d stderr %q stdout %q", status, exit, stderr, r.Status, r.ExitCode, r.Stderr, truncateString(r.Stdout, 500))
	}
	return r
}

func (e *env) post(path string, body any, headers ...string) *http.Response {
	e.t.Helper()
	return e.postIn(e.t, path, body, headers...)
}

func (e *env) postIn(t testing.TB, path string, body any, headers ...string) *http.Response {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	return e.doIn(t, "POST", path, bytes.NewReader(b), append([]string{"Content-Type", "application/json"}, headers...)...)
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
	return e.downloadIn(e.t, sid, fid)
}

func (e *env) downloadIn(t testing.TB, sid, fid string) []byte {
	t.Helper()
	resp := e.doIn(t, "GET", "/download/"+sid+"/"+fid, nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("download %s/%s: %d %s", sid, fid, resp.StatusCode, b)
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
