// Package e2e drives a real codeexec server with the real LibreChat client,
// the npm package @librechat/agents, at two generations:
//
//   - 3.9.2 (current, LibreChat >= v0.8.6): no X-API-Key, optional
//     `Authorization: Bearer`, file refs {id, resource_id, storage_session_id,
//     name, kind}, files threaded by the package's own ToolNode.
//   - 3.0.50 (legacy, LibreChat v0.8.1–v0.8.4): X-API-Key, refs {id,
//     session_id, name}, files threaded through the model-supplied session_id
//     and GET /files/{sid}?detail=full.
//
// The clients live in clients/v3.9.2 and clients/v3.0.50 (package.json +
// package-lock.json each; `npm ci` installs them). clients/*/driver.mjs runs
// one scenario and prints one `E2E-RESULT {json}` line per check.
//
// Every driver run talks to the server through a small recording reverse
// proxy, so the test can log what each client generation actually sent
// (method, path, headers, first 300 bytes of the body) and assert on it.
//
// Run:  go test ./test/e2e/ -run . -v -count=1 -timeout 20m
// Skip locally with CODEEXEC_E2E=0 (never skipped when CI=true).
// Extra server environment: CODEEXEC_E2E_SERVER_ENV="K=V,K2=V2"; test a
// prebuilt binary instead of building ./cmd/codeexec: CODEEXEC_E2E_BIN=path.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/testenv"
)

const (
	nodeBin      = "/usr/bin/node"
	resultPrefix = "E2E-RESULT "
	userID       = "65f0a1b2c3d4e5f601234567" // a LibreChat user id (24-hex ObjectId)
	agentID      = "agent_e2eAbCdEf0123456789"
)

// generation describes one client version under test.
type generation struct {
	name   string // "v3.9.2"
	legacy bool   // X-API-Key generation
}

var (
	current = generation{name: "v3.9.2"}
	legacy  = generation{name: "v3.0.50", legacy: true}
)

// scenario is one driver run.
type scenario struct {
	name string
	auth string // key | none | wrong (E2E_AUTH)
	skip string // reason the scenario does not apply to this generation
}

func scenariosFor(g generation) []scenario {
	s := []scenario{
		{name: "print", auth: "key"},
		{name: "js", auth: "key"},
		{name: "root_base_url", auth: "key"},
		{name: "files", auth: "key"},
		{name: "user_error", auth: "key"},
		{name: "bash", auth: "key"},
		{name: "upload", auth: "key"},
		{name: "batch", auth: "key"},
		{name: "long", auth: "key"},
		{name: "auth_rejected", auth: "wrong"},
	}
	if g.legacy {
		s = append(s, scenario{name: "trailing_slash_base_url", auth: "key"})
		for i := range s {
			if s[i].name == "bash" {
				s[i].skip = "@librechat/agents 3.0.50's execute_code schema enum has no 'bash' (added 2026-02) and it has no bash_tool; legacy LibreChat never sends lang=bash"
			}
		}
	} else {
		s = append(s, scenario{name: "upload_nested", auth: "key"})
	}
	return s
}

// noAuthScenarios run against a server started with CODEEXEC_AUTH=none.
var noAuthScenarios = []string{"print", "files", "upload"}

func TestLibreChatClients(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	if os.Getenv("CODEEXEC_E2E") == "0" {
		if !ci {
			t.Skip("CODEEXEC_E2E=0: skipping the LibreChat client end-to-end test (it never skips when CI=true)")
		}
		t.Log("CODEEXEC_E2E=0 is ignored because CI=true")
	}
	if runtime.GOOS != "linux" {
		t.Skipf("codeexec's sandbox needs linux, this is %s", runtime.GOOS)
	}
	if _, err := os.Stat(nodeBin); err != nil {
		t.Fatalf("node is required at %s for the LibreChat client e2e test: %v", nodeBin, err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is required for the LibreChat client e2e test (set CODEEXEC_E2E=0 to skip locally): %v", err)
	}

	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Clean(filepath.Join(here, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from %s: %v", here, err)
	}

	// Install both clients (in parallel with the build).
	var wg sync.WaitGroup
	installErr := make([]error, 2)
	for i, g := range []generation{current, legacy} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			installErr[i] = npmCI(t, npm, filepath.Join(here, "clients", g.name), filepath.Join(here, ".npm"))
		}()
	}
	bin := os.Getenv("CODEEXEC_E2E_BIN") // a prebuilt server, e.g. a release binary
	if bin == "" {
		bin = buildServer(t, root)
	}
	wg.Wait()
	for _, err := range installErr {
		if err != nil {
			t.Fatal(err)
		}
	}

	apiKey := randomHex(24)

	t.Run("key", func(t *testing.T) {
		srv := startServer(t, bin, map[string]string{"CODEEXEC_API_KEY": apiKey})
		for _, g := range []generation{current, legacy} {
			for _, sc := range scenariosFor(g) {
				t.Run(g.name+"/"+sc.name, func(t *testing.T) {
					if sc.skip != "" {
						testenv.Skip(t, sc.skip) // listed in test/skips.txt
					}
					t.Parallel()
					runScenario(t, here, srv, g, sc, apiKey)
				})
			}
		}
	})

	t.Run("noauth", func(t *testing.T) {
		srv := startServer(t, bin, map[string]string{"CODEEXEC_AUTH": "none"})
		for _, g := range []generation{current, legacy} {
			for _, name := range noAuthScenarios {
				sc := scenario{name: name, auth: "none"}
				t.Run(g.name+"/"+sc.name, func(t *testing.T) {
					t.Parallel()
					runScenario(t, here, srv, g, sc, "")
				})
			}
		}
	})
}

// ---------------------------------------------------------------------------
// setup

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func buildServer(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "codeexec")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/codeexec")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/codeexec: %v\n%s", err, out)
	}
	return bin
}

// npmCI installs a client project from its lock file, unless node_modules
// already matches it (a stamp holds the hash of package.json + lock).
func npmCI(t *testing.T, npm, dir, cache string) error {
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	pkg, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	sum := sha256.Sum256(append(append(pkg, 0), lock...))
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".codeexec-e2e-stamp")
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		t.Logf("%s: node_modules up to date with package-lock.json", filepath.Base(dir))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline", "--cache", cache)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in %s failed (the LibreChat client e2e test needs the npm registry or a warm cache %s): %v\n%s", dir, cache, err, tail(string(out), 4000))
	}
	t.Logf("%s: npm ci took %s", filepath.Base(dir), time.Since(start).Round(time.Second))
	return os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}

type server struct {
	url  string
	cmd  *exec.Cmd
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// startServer runs `codeexec serve` on a free loopback port, waits for
// GET /health == 200, and stops it (SIGTERM, checking its exit) at cleanup.
func startServer(t *testing.T, bin string, extra map[string]string) *server {
	t.Helper()
	port := freePort(t)
	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CODEEXEC_") || strings.HasPrefix(kv, "CODE_API_KEY=") || strings.HasPrefix(kv, "PORT=") {
			continue // the developer's own settings must not leak in
		}
		env = append(env, kv)
	}
	// The sandboxed code runs as an unprivileged uid that must be able to
	// traverse to its working directory under RunDir: t.TempDir() is 0700.
	runDir := t.TempDir()
	for _, d := range []string{filepath.Dir(runDir), runDir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	settings := map[string]string{
		"CODEEXEC_PORT":        port,
		"CODEEXEC_STORAGE_DIR": t.TempDir(),
		"CODEEXEC_RUN_DIR":     runDir,
	}
	for k, v := range extra {
		settings[k] = v
	}
	for _, kv := range strings.Split(os.Getenv("CODEEXEC_E2E_SERVER_ENV"), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			settings[k] = v
		}
	}
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	logs := &lockedBuffer{}
	cmd := exec.Command(bin, "serve")
	cmd.Env = env
	cmd.Stdout = logs
	cmd.Stderr = logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start codeexec serve: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	srv := &server{url: "http://127.0.0.1:" + port, cmd: cmd, logs: logs}

	stopped := false
	t.Cleanup(func() {
		if stopped {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("codeexec serve did not exit cleanly on SIGTERM: %v\nserver log tail:\n%s", err, tail(logs.String(), 3000))
			}
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("codeexec serve did not exit within 20s of SIGTERM\nserver log tail:\n%s", tail(logs.String(), 3000))
		}
		if t.Failed() {
			t.Logf("server log tail:\n%s", tail(logs.String(), 6000))
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("codeexec serve exited before becoming healthy: %v\nserver log:\n%s", err, tail(logs.String(), 6000))
		default:
		}
		resp, err := client.Get(srv.url + "/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("codeexec serve not healthy at %s/health after 60s (last: %v)\nserver log:\n%s", srv.url, err, tail(logs.String(), 6000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return srv
}

// ---------------------------------------------------------------------------
// the recording proxy

type recorded struct {
	Method string
	URI    string
	Header http.Header
	Body   []byte
	Status int
	Err    string
	Resp   []byte // body of a non-2xx response (first 1 KiB)
}

type recorder struct {
	mu   sync.Mutex
	reqs []*recorded
}

func (rc *recorder) all() []*recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]*recorded, len(rc.reqs))
	for i, r := range rc.reqs {
		c := *r
		out[i] = &c
	}
	return out
}

// startRecorder is a reverse proxy to target that keeps every request.
func startRecorder(t *testing.T, target string) (*recorder, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recorder{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = u.Scheme
			pr.Out.URL.Host = u.Host
			pr.Out.Host = u.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			r, ok := resp.Request.Context().Value(recKey{}).(*recorded)
			if !ok {
				return nil
			}
			var errBody []byte
			if resp.StatusCode >= 300 {
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				resp.Body.Close()
				resp.Body = io.NopCloser(bytes.NewReader(b))
				errBody = b[:min(len(b), 1024)]
			}
			rc.mu.Lock()
			r.Status = resp.StatusCode
			r.Resp = errBody
			rc.mu.Unlock()
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if r, ok := req.Context().Value(recKey{}).(*recorded); ok {
				rc.mu.Lock()
				r.Err = err.Error()
				rc.mu.Unlock()
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
		r := &recorded{Method: req.Method, URI: req.RequestURI, Header: req.Header.Clone(), Body: body}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, r)
		rc.mu.Unlock()
		proxy.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), recKey{}, r)))
	})
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return rc, ts.URL
}

type recKey struct{}

// ---------------------------------------------------------------------------
// running a scenario

type result struct {
	Scenario string          `json:"scenario"`
	Check    string          `json:"check"`
	OK       bool            `json:"ok"`
	Details  json.RawMessage `json:"details"`
}

func runScenario(t *testing.T, here string, srv *server, g generation, sc scenario, apiKey string) {
	rec, proxyURL := startRecorder(t, srv.url)
	dir := filepath.Join(here, "clients", g.name)

	// The clients have no timeout on /exec: bound each run here, so that a
	// hung server fails one scenario instead of the whole test binary.
	limit := 2 * time.Minute
	if sc.name == "long" {
		limit = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "driver.mjs", sc.name)
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = dir
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "PROXY", "NO_PROXY", "LIBRECHAT_CODE_BASEURL", "LIBRECHAT_CODE_API_KEY":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env,
		"E2E_BASE_URL="+proxyURL+"/v1",
		"E2E_AUTH="+sc.auth,
		"E2E_API_KEY="+apiKey,
		"E2E_USER_ID="+userID,
		"E2E_AGENT_ID="+agentID,
		"NO_PROXY=127.0.0.1,localhost",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond)

	reqs := rec.all()
	logRequests(t, reqs, apiKey)
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("driver stderr:\n%s", tail(s, 3000))
	}

	var results []result
	sc2 := bufio.NewScanner(bytes.NewReader(stdout.Bytes()))
	sc2.Buffer(make([]byte, 1<<20), 16<<20)
	for sc2.Scan() {
		line := sc2.Text()
		rest, ok := strings.CutPrefix(line, resultPrefix)
		if !ok {
			if strings.TrimSpace(line) != "" {
				t.Logf("driver stdout: %s", line)
			}
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(rest), &r); err != nil {
			t.Errorf("unparsable driver result %q: %v", line, err)
			continue
		}
		results = append(results, r)
	}
	failed := 0
	for _, r := range results {
		details := indentJSON(r.Details)
		if apiKey != "" {
			details = strings.ReplaceAll(details, apiKey, "<key>")
		}
		if r.OK {
			t.Logf("PASS %s/%s %s", r.Scenario, r.Check, tail(details, 1200))
		} else {
			failed++
			t.Errorf("FAIL %s %s/%s: %s", g.name, r.Scenario, r.Check, details)
		}
	}
	if len(results) == 0 {
		t.Errorf("driver printed no results (exit %v, %s)\nstdout:\n%s\nstderr:\n%s", runErr, elapsed, tail(stdout.String(), 3000), tail(stderr.String(), 3000))
	}
	if runErr != nil && failed == 0 {
		t.Errorf("driver exited with %v after %s although no check failed", runErr, elapsed)
	}
	if ctx.Err() != nil {
		t.Errorf("driver killed after %s (limit %s): a client call never returned", elapsed, limit)
	}
	t.Logf("%s %s: %d checks, %d failed, %d requests, %s", g.name, sc.name, len(results), failed, len(reqs), elapsed)

	checkWire(t, g, sc, reqs, apiKey)
}

// checkWire asserts what each client generation must put on the wire.
func checkWire(t *testing.T, g generation, sc scenario, reqs []*recorded, apiKey string) {
	t.Helper()
	if len(reqs) == 0 {
		t.Errorf("no request reached the server")
		return
	}
	for _, r := range reqs {
		where := r.Method + " " + r.URI
		if ua := r.Header.Get("User-Agent"); ua != "LibreChat/1.0" {
			t.Errorf("%s: User-Agent %q, want LibreChat/1.0", where, ua)
		}
		xKey, authz := r.Header.Get("X-API-Key"), r.Header.Get("Authorization")
		switch {
		case g.legacy:
			if xKey == "" || authz != "" {
				t.Errorf("%s: legacy client must send X-API-Key only (X-API-Key set=%v, Authorization set=%v)", where, xKey != "", authz != "")
			}
			if sc.auth == "key" && xKey != apiKey {
				t.Errorf("%s: X-API-Key is not the server's key", where)
			}
		case sc.auth == "none":
			if xKey != "" || authz != "" {
				t.Errorf("%s: current client without JWT config must send no auth header", where)
			}
		default:
			if xKey != "" || !strings.HasPrefix(authz, "Bearer ") {
				t.Errorf("%s: current client must send Authorization: Bearer and no X-API-Key", where)
			}
			if sc.auth == "key" && authz != "Bearer "+apiKey {
				t.Errorf("%s: Bearer token is not the server's key", where)
			}
		}
		if r.Err != "" {
			t.Errorf("%s: proxy could not reach the server: %s", where, r.Err)
		}
		path, _, _ := strings.Cut(r.URI, "?")
		if r.Method == http.MethodPost && strings.HasSuffix(path, "/exec") {
			var body map[string]any
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Errorf("%s: body is not JSON: %v", where, err)
				continue
			}
			if body["user_id"] != userID {
				t.Errorf("%s: body user_id = %v", where, body["user_id"])
			}
			if g.legacy {
				if _, ok := body["LIBRECHAT_CODE_API_KEY"]; !ok {
					t.Errorf("%s: legacy /exec body should carry LIBRECHAT_CODE_API_KEY (LibreChat spreads it into the tool params)", where)
				}
			} else {
				if body["codeSessionKey"] != "execute_code" {
					t.Errorf("%s: current /exec body should carry codeSessionKey", where)
				}
				if p := r.Header.Get("X-CodeAPI-Expected-Profile"); p != "default" {
					t.Errorf("%s: X-CodeAPI-Expected-Profile = %q, want default", where, p)
				}
			}
			if files, ok := body["files"].([]any); ok {
				for _, f := range files {
					m, _ := f.(map[string]any)
					if g.legacy {
						if m["session_id"] == nil || m["id"] == nil || m["name"] == nil {
							t.Errorf("%s: legacy file ref %v lacks id/session_id/name", where, m)
						}
					} else if m["storage_session_id"] == nil || m["resource_id"] == nil || m["kind"] == nil || m["id"] == nil || m["name"] == nil {
						t.Errorf("%s: current file ref %v lacks id/resource_id/storage_session_id/name/kind", where, m)
					}
				}
			}
		}
	}
	// Scenario-specific proof that the client took the path under test.
	has := func(pred func(r *recorded) bool) bool {
		for _, r := range reqs {
			if pred(r) {
				return true
			}
		}
		return false
	}
	execWithFiles := func(r *recorded) bool {
		if r.Method != http.MethodPost || !strings.HasSuffix(strings.SplitN(r.URI, "?", 2)[0], "/exec") {
			return false
		}
		var body struct {
			Files []map[string]any `json:"files"`
		}
		return json.Unmarshal(r.Body, &body) == nil && len(body.Files) > 0
	}
	switch sc.name {
	case "files":
		if g.legacy && !has(func(r *recorded) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URI, "/files/") && strings.Contains(r.URI, "detail=full")
		}) {
			t.Errorf("legacy client never called GET /files/{session_id}?detail=full")
		}
		if !has(execWithFiles) {
			t.Errorf("no /exec call carried file refs")
		}
		if !has(func(r *recorded) bool { return r.Method == http.MethodGet && strings.Contains(r.URI, "/download/") }) {
			t.Errorf("no /download call was made")
		}
	case "upload", "batch", "upload_nested":
		if !has(execWithFiles) && sc.auth != "wrong" {
			t.Errorf("no /exec call carried the uploaded file refs")
		}
	}
}

func logRequests(t *testing.T, reqs []*recorded, apiKey string) {
	t.Helper()
	var b strings.Builder
	for i, r := range reqs {
		status := fmt.Sprint(r.Status)
		if r.Status == 0 {
			status = "(no response)"
		}
		fmt.Fprintf(&b, "  #%d %s %s -> %s", i+1, r.Method, r.URI, status)
		if r.Err != "" {
			fmt.Fprintf(&b, " (proxy error: %s)", r.Err)
		}
		b.WriteString("\n     headers:")
		for _, k := range []string{"User-Agent", "Content-Type", "X-API-Key", "Authorization", "User-Id", "X-CodeAPI-Expected-Profile", "Content-Length", "Transfer-Encoding"} {
			if v := r.Header.Get(k); v != "" {
				fmt.Fprintf(&b, " %s=%q", k, v)
			}
		}
		if len(r.Resp) > 0 {
			fmt.Fprintf(&b, "\n     response: %q", r.Resp)
		}
		if len(r.Body) > 0 {
			body := r.Body
			if len(body) > 300 {
				body = body[:300]
			}
			fmt.Fprintf(&b, "\n     body(%dB): %q", len(r.Body), body)
		}
		b.WriteString("\n")
	}
	s := b.String()
	if apiKey != "" {
		s = strings.ReplaceAll(s, apiKey, "<key>")
	}
	t.Logf("requests seen on the wire:\n%s", s)
}

func indentJSON(raw json.RawMessage) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "  ", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
