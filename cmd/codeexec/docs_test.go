package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeConfigurationTableIsServeHelp: the README's table is what
// `serve --help --markdown` prints, and it names the same variables with
// the same defaults as `serve --help`.
func TestReadmeConfigurationTableIsServeHelp(t *testing.T) {
	doc := readme(t)
	start := strings.Index(doc, "| Variable | Default | Meaning |")
	if start < 0 {
		t.Fatal("README has no configuration table")
	}
	end := strings.Index(doc[start:], "\n\n")
	table := doc[start : start+end+1]

	var md, help bytes.Buffer
	if err := run(context.Background(), []string{"codeexec", "serve", "--help", "--markdown"}, func(string) string { return "" }, &md, io.Discard); err != nil {
		t.Fatal(err)
	}
	if table != md.String() {
		t.Errorf("README's configuration table differs from `codeexec serve --help --markdown` (paste its output):\n--- README\n%s\n--- serve --help --markdown\n%s", table, md.String())
	}

	if err := run(context.Background(), []string{"codeexec", "serve", "--help"}, func(string) string { return "" }, &help, io.Discard); err != nil {
		t.Fatal(err)
	}
	type row struct{ names, def string }
	var fromHelp, fromReadme []row
	helpRow := regexp.MustCompile(`^(CODEEXEC_\w+(?: \([A-Z_, ]+\))?)\s{2,}(\S+)\s{2,}`)
	for _, line := range strings.Split(help.String(), "\n") {
		if m := helpRow.FindStringSubmatch(line); m != nil {
			fromHelp = append(fromHelp, row{strings.NewReplacer("(", "", ")", "", ",", "").Replace(m[1]), m[2]})
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(line, " | ")
		names := strings.NewReplacer("`", "", "(", "", ")", "", "| ", "").Replace(cells[0])
		fromReadme = append(fromReadme, row{names, cells[1]})
	}
	if len(fromHelp) < 40 || len(fromHelp) != len(fromReadme) {
		t.Fatalf("%d rows in help, %d in README", len(fromHelp), len(fromReadme))
	}
	for i := range fromHelp {
		if fromHelp[i] != fromReadme[i] {
			t.Errorf("row %d: help %+v, README %+v", i, fromHelp[i], fromReadme[i])
		}
	}
	// Every variable the server reads is in the table.
	for _, v := range []string{"CODEEXEC_S3_REGION | us-east-1", "CODEEXEC_SANDBOX_ALLOW_DEGRADED", "CODEEXEC_ENTRYPOINT_PROC",
		"CODEEXEC_ENTRYPOINT_CGROUPS", "CODEEXEC_MEMORY_BUDGET_MB", "CODEEXEC_MEMORY_RESERVE_MB"} {
		if !strings.Contains(strings.ReplaceAll(table, "`", ""), v) {
			t.Errorf("README table lacks %s", v)
		}
	}
}

// TestQuickStartAsWritten runs the quick start: `make run`'s script
// creates and prints the key and starts the server, then the README's
// two lines (run from the repository's directory, here a copy) get 42.
func TestQuickStartAsWritten(t *testing.T) {
	doc := readme(t)
	i := strings.Index(doc, "KEY=$(cat .codeexec/api-key)")
	if i < 0 {
		t.Fatal("README's quick start does not set KEY")
	}
	block := doc[i:]
	block = block[:strings.Index(block, "```")]
	if !strings.Contains(block, `-H "X-API-Key: $KEY"`) || !strings.Contains(block, "http://localhost:8080/exec") {
		t.Fatalf("quick start block:\n%s", block)
	}

	dir := t.TempDir() // the repository's directory, where make run keeps .codeexec/
	os.MkdirAll(filepath.Join(dir, "scripts"), 0o755)
	script, err := os.ReadFile("../../scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "scripts", "run.sh"), script, 0o755)
	runDir, _ := os.MkdirTemp("", "codeexec-run-")
	os.Chmod(runDir, 0o711)
	defer os.RemoveAll(runDir)
	srv := exec.Command("bash", "scripts/run.sh", filepath.Join(binDir, "codeexec"))
	srv.Dir = dir
	// Port 0: the server binds a free port itself and logs it.
	srv.Env = []string{"PATH=/usr/bin:/bin", "CODEEXEC_PORT=0", "CODEEXEC_STORAGE_DIR=" + t.TempDir(), "CODEEXEC_RUN_DIR=" + runDir}
	out := lockedBuffer{mu: &sync.Mutex{}, b: &bytes.Buffer{}}
	srv.Stdout, srv.Stderr = out, out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- srv.Wait(); close(exited) }()
	defer func() { srv.Process.Kill(); <-done }()
	addr := listenAddr(t, func() string { return text(out) }, "listening", exited)
	_, port, _ := net.SplitHostPort(addr)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up:\n%s", text(out))
		}
	}
	key, _ := os.ReadFile(filepath.Join(dir, ".codeexec", "api-key"))
	if len(key) < 20 || !strings.Contains(text(out), "LIBRECHAT_CODE_API_KEY="+string(key)) {
		t.Fatalf("make run's key %q not printed:\n%s", key, text(out))
	}
	// The README's lines, the port aside (8080 may be taken on a shared host).
	sh := exec.Command("bash", "-euc", strings.ReplaceAll(block, "localhost:8080", "localhost:"+port))
	sh.Dir = dir
	got, err := sh.Output()
	if err != nil {
		t.Fatalf("quick start: %v\n%s", err, got)
	}
	var res struct{ Stdout, Status string }
	if json.Unmarshal(got, &res) != nil || res.Stdout != "42\n" || res.Status != "ok" {
		t.Fatalf("quick start answered %s", got)
	}
}

func text(l lockedBuffer) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMetricsListenerOnEveryInterfaceWarns: /metrics there has no
// authentication, so an address on every interface is logged.
func TestMetricsListenerOnEveryInterfaceWarns(t *testing.T) {
	const warning = `"msg":"CODEEXEC_METRICS_ADDR listens on every interface and /metrics there has no authentication`
	open := startServer(t, "CODEEXEC_METRICS_ADDR=:0")
	if !strings.Contains(open.log(), warning) {
		t.Errorf("no warning for an every-interface metrics listener:\n%s", open.log())
	}
	private := startServer(t, "CODEEXEC_METRICS_ADDR=127.0.0.1:0")
	if strings.Contains(private.log(), warning) {
		t.Errorf("warning for a loopback metrics listener:\n%s", private.log())
	}
}

// TestBudgetTooSmallIsRefused: a budget that cannot hold one execution
// stops the start with what to change.
func TestBudgetTooSmallIsRefused(t *testing.T) {
	env := map[string]string{"CODEEXEC_MEMORY_BUDGET_MB": "600", "CODEEXEC_MAX_MEMORY_MB": "512"}
	err := run(context.Background(), []string{"codeexec", "serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	const want = "memory budget: 600 MiB (CODEEXEC_MEMORY_BUDGET_MB) less CODEEXEC_MEMORY_RESERVE_MB=256 leaves 344 MiB, less than one execution's CODEEXEC_MAX_MEMORY_MB=512: give the server more memory or lower CODEEXEC_MAX_MEMORY_MB"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v", err)
	}
}
