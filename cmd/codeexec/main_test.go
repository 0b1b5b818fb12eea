package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

var binDir string

// TestMain builds the real binaries once: the server and the load generator
// run as separate processes, as in production.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "codeexec-bin-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755)
	binDir = dir
	for _, pkg := range []string{".", "../../bench/loadgen"} {
		out := filepath.Join(dir, filepath.Base(filepath.Clean(pkg)))
		if pkg == "." {
			out = filepath.Join(dir, "codeexec")
		}
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestServeHelpListsSettings(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"codeexec", "serve", "--help"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"CODEEXEC_API_KEY", "CODEEXEC_MAX_MEMORY_MB", "CODEEXEC_STORAGE_BACKEND", "CODEEXEC_MAX_QUEUE"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("help lacks %s", v)
		}
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	for _, env := range []map[string]string{
		{"CODEEXEC_MAX_MEMORY_MB": "lots"},
		{"CODEEXEC_STORAGE_BACKEND": "ftp"},
		{"CODEEXEC_STORAGE_BACKEND": "s3"},
		{"CODEEXEC_AUTH": "maybe"},
		{"CODEEXEC_RATE_LIMIT_EXEC": "fast"},
		{"CODEEXEC_UID_BASE": "1000"},
	} {
		err := run(context.Background(), []string{"codeexec", "serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "CODEEXEC_") {
			t.Errorf("%v: err %v", env, err)
		}
	}
	if err := run(context.Background(), []string{"codeexec", "frobnicate"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Error("unknown command accepted")
	}
}

// server is a codeexec process.
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	key    string
	runDir string
	stderr *bytes.Buffer
	mu     *sync.Mutex
	done   chan error
}

// listenAddr waits for the server's log line msg ("listening", "metrics
// listening") and returns the address it reports as 127.0.0.1:port: the
// server binds port 0 itself, so no port picked by the test can be taken
// meanwhile.
func listenAddr(t *testing.T, log func() string, msg string, exited <-chan struct{}) string {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(log(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.Addr != "" {
				_, port, err := net.SplitHostPort(rec.Addr)
				if err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				return "127.0.0.1:" + port
			}
		}
		select {
		case <-exited:
			t.Fatalf("the server exited before logging %q:\n%s", msg, log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line:\n%s", msg, log())
		}
	}
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func startServer(t *testing.T, env ...string) *server {
	t.Helper()
	runDir, _ := os.MkdirTemp("", "codeexec-run-")
	os.Chmod(runDir, 0o711)
	s := &server{t: t, key: "k-" + filepath.Base(runDir), runDir: runDir, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	s.cmd = exec.Command(filepath.Join(binDir, "codeexec"), "serve")
	s.cmd.Env = append([]string{"PATH=/usr/bin:/bin", "CODEEXEC_PORT=0", "CODEEXEC_API_KEY=" + s.key,
		"CODEEXEC_STORAGE_DIR=" + t.TempDir(), "CODEEXEC_RUN_DIR=" + runDir}, env...)
	s.cmd.Stderr = lockedBuffer{s.mu, s.stderr}
	s.cmd.Stdout = s.cmd.Stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { s.done <- s.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		os.RemoveAll(runDir)
		if t.Failed() {
			t.Logf("server log:\n%s", s.log())
		}
	})
	s.url = "http://" + listenAddr(t, s.log, "listening", exited)
	if code, b := s.request("GET", "/health", ""); code != 200 {
		t.Fatalf("health: %d %s", code, b)
	}
	return s
}

// exitCode waits for the server to exit and returns its error.
func (s *server) exit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("server did not exit within %v", within)
		return nil
	}
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

func (s *server) request(method, path, body string) (int, []byte) {
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("X-API-Key", s.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// metric reads one sample's value from /metrics.
func (s *server) metric(t *testing.T, name string) float64 {
	t.Helper()
	code, b := s.request("GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, b)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.LastIndexByte(line, ' '); i > 0 && line[:i] == name {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			return v
		}
	}
	return 0
}

// leftovers lists mounts and sandbox processes of this server.
func (s *server) leftovers(health map[string]any) []string {
	var out []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, s.runDir) {
			out = append(out, "mount: "+l)
		}
	}
	iso := health["isolation"].(map[string]any)
	var lo, span uint64
	fmt.Sscanf(iso["uid_map"].(string), "inside 0-65535 -> host %d + slot*%d", &lo, &span)
	hi := lo + span*uint64(iso["slots"].(float64))
	// A warm run answers as soon as its code has exited; the server kills
	// and reaps what is left of it right after, off the request path: give
	// that a moment, but nothing may still run after it.
	uidLine := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var procs []string
		statuses, _ := filepath.Glob("/proc/[0-9]*/status")
		for _, st := range statuses {
			b, err := os.ReadFile(st)
			if err != nil {
				continue
			}
			if m := uidLine.FindSubmatch(b); m != nil {
				if uid, _ := strconv.ParseUint(string(m[1]), 10, 32); uid >= lo && uid < hi {
					procs = append(procs, "process: "+st)
				}
			}
		}
		if len(procs) == 0 || time.Now().After(deadline) {
			return append(out, procs...)
		}
	}
}

func (s *server) health(t *testing.T) map[string]any {
	code, b := s.request("GET", "/health", "")
	var h map[string]any
	if code != 200 || json.Unmarshal(b, &h) != nil {
		t.Fatalf("health: %d %s", code, b)
	}
	return h
}

type loadSummary struct {
	Requests      int            `json:"requests"`
	Status        map[string]int `json:"status"`
	Bad429        int            `json:"bad_429"`
	LostFiles     int            `json:"lost_files"`
	WrongOutput   int            `json:"wrong_output"`
	TransportErrs int            `json:"transport_errors"`
	P50MS         float64        `json:"p50_ms"`
	PerSecond     float64        `json:"per_second"`
}

// TestLoadGetsOnlyOKAndWellFormed429 sends 200 concurrent clients at a
// server that runs 2 executions at once and queues 8.
func TestLoadGetsOnlyOKAndWellFormed429(t *testing.T) {
	s := startServer(t, "CODEEXEC_MAX_CONCURRENCY=2", "CODEEXEC_MAX_QUEUE=8", "CODEEXEC_QUEUE_TIMEOUT_SECONDS=2")
	cmd := exec.Command(filepath.Join(binDir, "loadgen"), "-url", s.url, "-key", s.key, "-c", "200", "-n", "600", "-duration", "3m")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("loadgen: %v", err)
	}
	var sum loadSummary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	t.Logf("load: %s", out)
	ok, busy := sum.Status["200"], sum.Status["429"]
	if ok+busy != 600 || ok == 0 || busy == 0 || sum.Bad429 != 0 || sum.LostFiles != 0 || sum.WrongOutput != 0 || sum.TransportErrs != 0 {
		t.Fatalf("want only 200s and well-formed 429s, no lost files: %+v", sum)
	}
	if got := s.metric(t, `codeexec_rejected_total{reason="queue_full"}`); int(got) != busy {
		t.Errorf("metrics count %v rejections, clients saw %d", got, busy)
	}
	if got := s.metric(t, `codeexec_execution_duration_seconds_count{language="py",status="ok"}`); int(got) != ok {
		t.Errorf("metrics count %v executions, clients saw %d", got, ok)
	}
	if got := s.metric(t, `codeexec_http_requests_total{code="429",route="POST /exec"}`); int(got) != busy {
		t.Errorf("request metrics count %v 429s, clients saw %d", got, busy)
	}
	if s.metric(t, "codeexec_stored_bytes_total") < float64(ok) {
		t.Error("stored bytes not counted")
	}
	t.Logf("429 rate: %.1f%%", 100*float64(busy)/600)
	if l := s.leftovers(s.health(t)); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

// TestSIGTERMDrains stops the server while executions run and queue: they
// finish, /ready answers 503 "draining" so that load balancers stop sending
// traffic, new requests get the promised JSON 503, and the process exits 0
// leaving nothing behind.
func TestSIGTERMDrains(t *testing.T) {
	s := startServer(t, "CODEEXEC_MAX_CONCURRENCY=2", "CODEEXEC_SHUTDOWN_GRACE_SECONDS=30")
	health := s.health(t)
	type res struct {
		code int
		body []byte
	}
	results := make(chan res, 3)
	for i := 0; i < 3; i++ {
		go func() {
			c, b := s.request("POST", "/exec", `{"lang":"bash","code":"sleep 2.5; echo done"}`)
			results <- res{c, b}
		}()
	}
	waitMetric(t, s, "codeexec_executions_running", 2)
	waitMetric(t, s, "codeexec_queue_depth", 1)
	s.cmd.Process.Signal(syscall.SIGTERM)
	// Draining is observable: /ready turns 503 (no API key needed).
	var ready []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(s.url + "/ready")
		if err != nil {
			t.Fatalf("/ready while draining: %v", err)
		}
		ready, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready still %d after SIGTERM: %s", resp.StatusCode, ready)
		}
	}
	// (The drain guard answers every route but /health before any handler:
	// handleReady's own "draining" answer is never reached.)
	if string(ready) != `{"error":"Service is shutting down"}`+"\n" {
		t.Errorf("/ready while draining: %s", ready)
	}
	code, b := s.request("POST", "/exec", `{"lang":"py","code":"print(1)"}`)
	if code != 503 || string(b) != `{"error":"Service is shutting down"}`+"\n" {
		t.Errorf("request during drain: %d %s", code, b)
	}
	for i := 0; i < 3; i++ {
		r := <-results
		var got struct{ Stdout, Stderr, Status string }
		if r.code != 200 || json.Unmarshal(r.body, &got) != nil || got.Stdout != "done\n" || got.Stderr != "" || got.Status != "ok" {
			t.Errorf("in-flight execution: %d %s", r.code, r.body)
		}
	}
	if err := s.exit(t, 30*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if l := s.leftovers(health); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

// waitMetric waits until /metrics reports want for name.
func waitMetric(t *testing.T, s *server, name string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); s.metric(t, name) != want; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v, want %v", name, s.metric(t, name), want)
		}
	}
}

// TestSIGTERMKillsAfterGrace: an execution longer than the grace period is
// killed and answered with status killed; the process still exits 0 and
// cleans up.
func TestSIGTERMKillsAfterGrace(t *testing.T) {
	s := startServer(t, "CODEEXEC_SHUTDOWN_GRACE_SECONDS=1")
	health := s.health(t)
	type res struct {
		code int
		body []byte
	}
	got := make(chan res, 1)
	go func() {
		c, b := s.request("POST", "/exec", `{"lang":"bash","code":"echo started; sleep 60"}`)
		got <- res{c, b}
	}()
	waitMetric(t, s, "codeexec_executions_running", 1)
	start := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.exit(t, 20*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("exit took %v with a 1 s grace", d)
	}
	r := <-got
	var ans struct{ Stdout, Stderr, Status string }
	if r.code != 200 || json.Unmarshal(r.body, &ans) != nil || ans.Status != "killed" ||
		ans.Stderr != "\n[codeexec] execution was cancelled\n" || ans.Stdout != "started\n" {
		t.Errorf("killed execution answered %d %s", r.code, r.body)
	}
	if l := s.leftovers(health); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

// TestMetricsNeedTheKeyOrTheirOwnListener: /metrics on the main port is
// behind the API key; with CODEEXEC_METRICS_ADDR it is served there (for a
// scraper on a private network) and not on the main port.
func TestMetricsNeedTheKeyOrTheirOwnListener(t *testing.T) {
	s := startServer(t)
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !bytes.HasPrefix(b, []byte(`{"error":"Unauthorized`)) {
		t.Fatalf("/metrics without a key: %d %s", resp.StatusCode, b)
	}
	if code, b := s.request("GET", "/metrics", ""); code != 200 || !bytes.Contains(b, []byte("codeexec_build_info")) {
		t.Fatalf("/metrics with the key: %d %.200s", code, b)
	}

	s = startServer(t, "CODEEXEC_METRICS_ADDR=127.0.0.1:0")
	addr := listenAddr(t, s.log, "metrics listening", nil)
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("codeexec_build_info")) {
		t.Fatalf("metrics listener: %d %.200s", resp.StatusCode, b)
	}
	if code, b := s.request("GET", "/metrics", ""); code != 404 {
		t.Fatalf("/metrics on the main port with a metrics listener: %d %.200s", code, b)
	}
}

// TestServerLogNeverContainsAKey sends the key every way clients do (legacy
// clients put it in the JSON body too), right and wrong, and reads the
// whole server log.
func TestServerLogNeverContainsAKey(t *testing.T) {
	s := startServer(t, "CODEEXEC_LOG_LEVEL=debug")
	wrong := "sk-wrong-" + filepath.Base(s.runDir)
	for _, hdr := range [][2]string{{"X-API-Key", s.key}, {"Authorization", "Bearer " + s.key}, {"X-API-Key", wrong}, {"Authorization", "Bearer " + wrong}} {
		body := `{"lang":"py","code":"print(1)","LIBRECHAT_CODE_API_KEY":"` + s.key + `","api_key":"` + wrong + `"}`
		req, _ := http.NewRequest("POST", s.url+"/exec?key="+wrong, strings.NewReader(body))
		req.Header.Set(hdr[0], hdr[1])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.exit(t, 30*time.Second)
	log := s.log()
	if !strings.Contains(log, `"msg":"request"`) {
		t.Fatalf("no request was logged:\n%s", log)
	}
	for _, k := range []string{s.key, wrong} {
		if strings.Contains(log, k) {
			t.Fatalf("the server log contains a key:\n%s", log)
		}
	}
}

// TestTracesExported points the server at an OTLP/HTTP receiver of the
// test's own and checks an /exec produces the documented spans.
func TestTracesExported(t *testing.T) {
	var mu sync.Mutex
	names := map[string]bool{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad", 400)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					names[sp.Name] = true
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer recv.Close()
	s := startServer(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.URL, "OTEL_BSP_SCHEDULE_DELAY=50")
	if code, b := s.request("POST", "/exec", `{"lang":"py","code":"open('a.txt','w').write('x')"}`); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	s.cmd.Process.Signal(syscall.SIGTERM) // flushes the exporter
	s.exit(t, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"POST /exec", "auth", "queue", "stage", "sandbox.run", "collect"} {
		if !names[want] {
			t.Errorf("no %q span; got %v", want, names)
		}
	}
}

// TestDegradedOnlyWhenAllowed hides the host's cgroups from the server (a
// private mount namespace with an empty tmpfs over /sys/fs/cgroup): serve
// refuses to start, unless CODEEXEC_SANDBOX_ALLOW_DEGRADED=true, and then
// says so in /health and still bounds memory and processes with rlimits.
func TestDegradedOnlyWhenAllowed(t *testing.T) {
	hide := func(env ...string) *exec.Cmd {
		runDir, _ := os.MkdirTemp("", "codeexec-run-")
		os.Chmod(runDir, 0o711)
		t.Cleanup(func() { os.RemoveAll(runDir) })
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs none /sys/fs/cgroup && exec "$0" serve`, filepath.Join(binDir, "codeexec"))
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "CODEEXEC_API_KEY=k", "CODEEXEC_STORAGE_DIR=" + t.TempDir(),
			"CODEEXEC_RUN_DIR=" + runDir}, env...)
		return cmd
	}
	out, err := hide("CODEEXEC_PORT=0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "CODEEXEC_SANDBOX_ALLOW_DEGRADED") {
		t.Fatalf("serve started without cgroups, or did not say how to allow it: %v\n%s", err, out)
	}

	cmd := hide("CODEEXEC_PORT=0", "CODEEXEC_SANDBOX_ALLOW_DEGRADED=true", "CODEEXEC_MAX_MEMORY_MB=256", "CODEEXEC_MAX_PIDS=32")
	var mu sync.Mutex
	var logs bytes.Buffer
	cmd.Stderr = lockedBuffer{&mu, &logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); <-exited }()
	log := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	s := &server{t: t, url: "http://" + listenAddr(t, log, "listening", exited), key: "k"}
	h := s.health(t)
	if iso := h["isolation"].(map[string]any); iso["degraded"] != true {
		t.Fatalf("health does not say degraded: %v", iso)
	}
	if code, b := s.request("POST", "/exec", `{"lang":"py","code":"print(6*7)"}`); code != 200 || !bytes.Contains(b, []byte(`"stdout":"42\n"`)) {
		t.Fatalf("exec: %d %s", code, b)
	}
	code, b := s.request("POST", "/exec", `{"lang":"py","code":"x = bytearray(1 << 30)\nprint('allocated')"}`)
	if code != 200 || bytes.Contains(b, []byte("allocated")) || !bytes.Contains(b, []byte("MemoryError")) {
		t.Fatalf("1 GiB allocated under a 256 MB limit: %d %s", code, b)
	}
	code, b = s.request("POST", "/exec", `{"lang":"bash","code":"for i in $(seq 64); do sleep 5 & done; wait; echo done","timeout":20000}`)
	if code != 200 || !bytes.Contains(b, []byte("Resource temporarily unavailable")) {
		t.Fatalf("64 processes under a limit of 32: %d %s", code, b)
	}
}

// TestUIDBase: containers sharing a host give each server its own uid band.
func TestUIDBase(t *testing.T) {
	s := startServer(t, "CODEEXEC_UID_BASE=0x60000000")
	var lo, span uint64
	fmt.Sscanf(s.health(t)["isolation"].(map[string]any)["uid_map"].(string), "inside 0-65535 -> host %d + slot*%d", &lo, &span)
	if lo < 0x60000000 || lo >= 0x64000000 || span != 65536 {
		t.Fatalf("uid range starts at %#x", lo)
	}
	if code, b := s.request("POST", "/exec", `{"lang":"bash","code":"id -u"}`); code != 200 || !bytes.Contains(b, []byte(`"stdout":"1000\n"`)) {
		t.Fatalf("%d %s", code, b)
	}
}
