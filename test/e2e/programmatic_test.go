package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ptcPauseSeconds is the servers' pause limit here: short, so that the
// pause_expires scenario (a tool slower than it) stays quick.
const ptcPauseSeconds = 4

// TestProgrammaticToolCalling drives POST /exec/programmatic with the real
// client, @librechat/agents 3.9.2 (clients/v3.9.2/ptc.mjs runs
// run_tools_with_code and run_tools_with_bash as LibreChat's ToolNode does,
// with tools implemented in the driver), then checks the token rules and
// the capability answers over raw HTTP, and finally runs the client behind
// a round-robin balancer over two instances sharing one storage directory.
func TestProgrammaticToolCalling(t *testing.T) {
	if os.Getenv("CODEEXEC_E2E") == "0" && os.Getenv("CI") != "true" {
		t.Skip("CODEEXEC_E2E=0")
	}
	if runtime.GOOS != "linux" {
		t.Skipf("codeexec's sandbox needs linux, this is %s", runtime.GOOS)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is required for the LibreChat client e2e test: %v", err)
	}
	here, _ := os.Getwd()
	root := filepath.Clean(filepath.Join(here, "..", ".."))
	if err := npmCI(t, npm, filepath.Join(here, "clients", current.name), filepath.Join(here, ".npm")); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("CODEEXEC_E2E_BIN")
	if bin == "" {
		bin = buildServer(t, root)
	}
	key, otherKey := randomHex(24), randomHex(24)
	storeDir := t.TempDir()
	env := map[string]string{
		"CODEEXEC_API_KEY": key + "," + otherKey, "CODEEXEC_STORAGE_DIR": storeDir,
		"CODEEXEC_PTC_PAUSE_SECONDS": strconv.Itoa(ptcPauseSeconds),
	}
	a := startServer(t, bin, env)

	t.Run("client", func(t *testing.T) {
		for _, name := range []string{"py_two_tools", "py_loop", "py_parallel", "py_tool_error", "py_files",
			"py_user_exception", "bash_sequential", "bash_background", "bash_loop", "py_timeout", "pause_expires", "cancel"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				reqs := runPTCDriver(t, here, a.url, name, key)
				if name == "cancel" {
					var cancelled bool
					for _, r := range reqs {
						if strings.HasSuffix(r.URI, "/exec/programmatic/cancel") && r.Status == http.StatusOK {
							cancelled = true
						}
					}
					if !cancelled {
						t.Errorf("no cancel request of the client was answered 200")
					}
				}
			})
		}
	})

	t.Run("protocol", func(t *testing.T) {
		post := func(k, body string, hdr ...string) (int, map[string]any) {
			t.Helper()
			req, _ := http.NewRequest("POST", a.url+"/v1/exec/programmatic", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+k)
			req.Header.Set("Content-Type", "application/json")
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m map[string]any
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("status %d, not JSON: %s", resp.StatusCode, b)
			}
			return resp.StatusCode, m
		}
		code, m := post(key, `{"code":"x = await lookup_item(id=7)\nprint('item', x['id'])","tools":[{"name":"lookup-item"}],"timeout":15000}`)
		if code != 200 || m["status"] != "tool_call_required" {
			t.Fatalf("start: %d %v", code, m)
		}
		tok := m["continuation_token"].(string)
		calls := m["tool_calls"].([]any)
		call := calls[0].(map[string]any)
		if len(calls) != 1 || call["name"] != "lookup-item" || call["input"].(map[string]any)["id"] != float64(7) {
			t.Fatalf("tool calls: %v", calls)
		}
		results := `{"continuation_token":"` + tok + `","tool_results":[{"call_id":"` + call["id"].(string) + `","result":{"id":7},"is_error":false}]}`
		if code, m := post(otherKey, results); code != 404 || m["code"] != "continuation_not_found" {
			t.Errorf("another caller's continuation: %d %v, want 404 continuation_not_found", code, m)
		}
		if code, m := post(key, `{"continuation_token":"ptc_forged","tool_results":[]}`); code != 404 {
			t.Errorf("forged token: %d %v, want 404", code, m)
		}
		code, m = post(key, results)
		if code != 200 || m["status"] != "completed" || m["stdout"] != "item 7\n" {
			t.Fatalf("continuation: %d %v", code, m)
		}
		if code, m := post(key, results); code != 410 || m["code"] != "continuation_used" {
			t.Errorf("reused token: %d %v, want 410 continuation_used", code, m)
		}
		// Capability answers: 409 unsupported_capability, never 404/5xx.
		for _, c := range []struct {
			body string
			hdr  []string
		}{
			{`{"code":"echo hi","lang":"bash","tools":[{"name":"t"}]}`, []string{"X-LibreChat-Code-Workspace-ID", "ws-1"}},
			{`{"code":"echo hi","lang":"bash","tools":[{"name":"t"}],"workspace_instance_id":"` + strings.Repeat("a", 64) + `"}`, nil},
			{`{"code":"console.log(1)","lang":"js","tools":[{"name":"t"}]}`, nil},
		} {
			if code, m := post(key, c.body, c.hdr...); code != 409 || m["code"] != "unsupported_capability" || m["error"] == "" {
				t.Errorf("%s %v: %d %v, want 409 unsupported_capability", c.body, c.hdr, code, m)
			}
		}
	})

	t.Run("two-instances", func(t *testing.T) {
		b := startServer(t, bin, env) // the same storage directory: a shared bucket
		var n atomic.Int64
		targets := []*url.URL{mustURL(t, a.url), mustURL(t, b.url)}
		lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			u := targets[n.Add(1)%2]
			pr.SetURL(u)
		}})
		t.Cleanup(lb.Close)
		runPTCDriver(t, here, lb.URL, "two_instances", key)
		replays := strings.Count(a.logs.String(), "replaying a run paused at another instance") +
			strings.Count(b.logs.String(), "replaying a run paused at another instance")
		// Python: 4 continuations, bash: 2, alternating instances.
		if replays < 6 {
			t.Errorf("%d continuations were replayed at the other instance, want every one of the 6", replays)
		}
	})
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// runPTCDriver runs one scenario of ptc.mjs through a recording proxy and
// reports its checks; it returns the requests the client made.
func runPTCDriver(t *testing.T, here, target, name, apiKey string) []*recorded {
	rec, proxyURL := startRecorder(t, target)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "ptc.mjs", name)
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = filepath.Join(here, "clients", current.name)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "PROXY", "NO_PROXY", "LIBRECHAT_CODE_BASEURL", "LIBRECHAT_CODE_API_KEY":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "E2E_BASE_URL="+proxyURL+"/v1", "E2E_AUTH=key", "E2E_API_KEY="+apiKey,
		"E2E_PTC_PAUSE_MS="+strconv.Itoa(ptcPauseSeconds*1000), "NO_PROXY=127.0.0.1,localhost")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	reqs := rec.all()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("driver stderr:\n%s", tail(s, 3000))
	}
	n, failed := 0, 0
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), resultPrefix)
		if !ok {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(rest), &r); err != nil {
			t.Errorf("unparsable driver result %q: %v", rest, err)
			continue
		}
		n++
		details := strings.ReplaceAll(indentJSON(r.Details), apiKey, "<key>")
		if !r.OK {
			failed++
			t.Errorf("FAIL %s/%s: %s", r.Scenario, r.Check, details)
			continue
		}
		t.Logf("PASS %s/%s %s", r.Scenario, r.Check, tail(details, 1500))
		var d struct {
			Median *float64 `json:"round_trip_median_ms"`
		}
		if json.Unmarshal(r.Details, &d) == nil && d.Median != nil {
			t.Logf("round-trip latency (%s): median %.1f ms from a tool_call_required answer to the next answer, tool time excluded", r.Check, *d.Median)
		}
	}
	if n == 0 {
		t.Errorf("driver printed no results (%v)\nstdout:\n%s", runErr, tail(stdout.String(), 3000))
	}
	if runErr != nil && failed == 0 {
		t.Errorf("driver exited with %v although no check failed", runErr)
	}
	for _, r := range reqs {
		if name == "cancel" && strings.Contains(r.Err, "context canceled") {
			continue // the client aborted this request on purpose
		}
		if r.Status >= 500 || r.Err != "" {
			t.Errorf("%s %s: status %d %s %s", r.Method, r.URI, r.Status, r.Err, r.Resp)
		}
	}
	return reqs
}
