package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestTwoInstancesShareS3 runs two codeexec servers over one S3 bucket (a
// real S3-compatible server, versitygw): whatever one instance stores, the
// other serves. First by hand across instances, then with the real
// LibreChat clients behind a round-robin balancer, so consecutive calls of
// one conversation land on different instances.
func TestTwoInstancesShareS3(t *testing.T) {
	if os.Getenv("CODEEXEC_E2E") == "0" && os.Getenv("CI") != "true" {
		t.Skip("CODEEXEC_E2E=0")
	}
	here, _ := os.Getwd()
	root := filepath.Clean(filepath.Join(here, "..", ".."))
	s3URL, creds := startVersityGW(t, root)
	bin := os.Getenv("CODEEXEC_E2E_BIN")
	if bin == "" {
		bin = buildServer(t, root)
	}
	apiKey := randomHex(24)
	env := map[string]string{
		"CODEEXEC_API_KEY": apiKey, "CODEEXEC_STORAGE_BACKEND": "s3", "CODEEXEC_S3_BUCKET": "codeexec",
		"CODEEXEC_S3_ENDPOINT": s3URL, "CODEEXEC_S3_REGION": "us-east-1",
	}
	for k, v := range creds {
		env[k] = v
	}
	a, b := startServer(t, bin, env), startServer(t, bin, env)

	type reply struct {
		code int
		body []byte
	}
	call := func(base, method, path string, body io.Reader, ctype string) reply {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, body)
		req.Header.Set("X-API-Key", apiKey)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return reply{resp.StatusCode, out}
	}
	jsonOf := func(r reply, want int) map[string]any {
		t.Helper()
		var m map[string]any
		if r.code != want || json.Unmarshal(r.body, &m) != nil {
			t.Fatalf("status %d (want %d): %s", r.code, want, r.body)
		}
		return m
	}

	t.Run("sessions-api-across-instances", func(t *testing.T) {
		s := jsonOf(call(a.url, "POST", "/v1/sessions", bytes.NewReader([]byte(`{"language":"python"}`)), "application/json"), 201)
		sid := s["session_id"].(string)
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		w, _ := mw.CreateFormFile("file", "in.csv")
		w.Write([]byte("n\n20\n22\n"))
		mw.Close()
		jsonOf(call(a.url, "POST", "/v1/sessions/"+sid+"/files", &buf, mw.FormDataContentType()), 200)
		r := jsonOf(call(b.url, "POST", "/v1/sessions/"+sid+"/execute", bytes.NewReader([]byte(
			`{"code":"n = sum(int(x) for x in open('in.csv').read().split()[1:])\nopen('out.txt','w').write(str(n))\nprint(n)"}`)), "application/json"), 200)
		if r["stdout"] != "42\n" {
			t.Fatalf("execute on B: %v", r)
		}
		got := jsonOf(call(a.url, "GET", "/v1/sessions/"+sid, nil, ""), 200)
		if files := got["files"].([]any); len(files) != 2 {
			t.Fatalf("A lists %v", files)
		}
		got2 := call(b.url, "GET", "/v1/sessions/"+sid+"/files/out.txt", nil, "")
		if got2.code != 200 || string(got2.body) != "42" {
			t.Fatalf("download on B: %d %q", got2.code, got2.body)
		}
		jsonOf(call(b.url, "DELETE", "/v1/sessions/"+sid, nil, ""), 200)
		jsonOf(call(a.url, "GET", "/v1/sessions/"+sid, nil, ""), 404)
	})

	t.Run("exec-on-one-download-on-other", func(t *testing.T) {
		r := jsonOf(call(a.url, "POST", "/exec", bytes.NewReader([]byte(`{"lang":"py","code":"open('r.bin','wb').write(bytes(range(256)))"}`)), "application/json"), 200)
		f := r["files"].([]any)[0].(map[string]any)
		d := call(b.url, "GET", fmt.Sprintf("/download/%s/%s", r["session_id"], f["id"]), nil, "")
		if d.code != 200 || len(d.body) != 256 || d.body[255] != 255 {
			t.Fatalf("download on B: %d %d bytes", d.code, len(d.body))
		}
		var list []string
		l := call(b.url, "GET", fmt.Sprintf("/files/%s?detail=simple", r["session_id"]), nil, "")
		if json.Unmarshal(l.body, &list); l.code != 200 || len(list) != 1 {
			t.Fatalf("list on B: %d %s", l.code, l.body)
		}
	})

	// The real clients, each call balanced to the next instance.
	var turn, hitsA, hitsB atomic.Int64
	ua, _ := url.Parse(a.url)
	ub, _ := url.Parse(b.url)
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		target := ua
		if turn.Add(1)%2 == 0 {
			target, _ = ub, hitsB.Add(1)
		} else {
			hitsA.Add(1)
		}
		pr.SetURL(target)
		pr.Out.URL.Path = pr.In.URL.Path
		pr.Out.URL.RawPath = pr.In.URL.RawPath
	}})
	t.Cleanup(lb.Close)
	balanced := &server{url: lb.URL}
	for _, g := range []generation{current, legacy} {
		for _, name := range []string{"print", "files", "upload"} {
			t.Run("client/"+g.name+"/"+name, func(t *testing.T) {
				runScenario(t, here, balanced, g, scenario{name: name, auth: "key"}, apiKey)
			})
		}
	}
	if hitsA.Load() == 0 || hitsB.Load() == 0 {
		t.Fatalf("balancer did not use both instances: %d / %d", hitsA.Load(), hitsB.Load())
	}
	t.Logf("client requests served: A %d, B %d", hitsA.Load(), hitsB.Load())
}

// startVersityGW runs an S3-compatible server over a temporary directory
// holding the bucket "codeexec"; it returns its URL and the credentials.
func startVersityGW(t *testing.T, root string) (string, map[string]string) {
	t.Helper()
	binDir := os.Getenv("CODEEXEC_TEST_BIN")
	if binDir == "" {
		binDir = filepath.Join(root, ".cache", "bin")
	}
	gw := filepath.Join(binDir, "versitygw")
	if _, err := os.Stat(gw); err != nil {
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "install-test-servers.sh"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("installing the S3 test server: %v\n%s", err, out)
		}
	}
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, "codeexec"), 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	const access, secret = "codeexec-e2e", "codeexec-e2e-secret"
	cmd := exec.Command(gw, "--access", access, "--secret", secret, "--port", "127.0.0.1:"+port, "--quiet", "posix", data)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("versitygw did not start: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://127.0.0.1:" + port, map[string]string{
		"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
	}
}
