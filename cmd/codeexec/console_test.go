package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser starts Debian's headless Chromium for the test: without it the
// test skips, except in CI, which installs it (scripts/packages.txt).
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the console's browser test needs Debian's chromium (scripts/packages.txt)")
		}
		t.Skip("no chromium")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // as root, Chromium refuses its own sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	// Start it now (without a deadline: the first call's context is the
	// browser's lifetime): a browser that cannot start fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// artifacts is where the screenshots go: $CODEEXEC_TEST_ARTIFACTS, else a
// directory that outlives the test (printed in the log).
func artifacts(t *testing.T) string {
	dir := os.Getenv("CODEEXEC_TEST_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "codeexec-console-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshots in %s", dir)
	return dir
}

// page drives the console in the browser, failing the test with a
// screenshot and the page's text when a wait runs out.
type page struct {
	t             *testing.T
	ctx           context.Context
	dir           string
	width, height int64
	scale         float64
}

func (p *page) run(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail(what, err)
	}
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	p.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
	tctx, tcancel := context.WithTimeout(p.ctx, 5*time.Second)
	text, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.innerText`))
	tcancel()
	p.t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
}

// eval evaluates a JavaScript expression.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluating "+expr, err)
	}
	return v
}

// until waits for a JavaScript expression to become true.
func (p *page) until(what, expr string, timeout time.Duration) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
		p.fail(what, err)
	}
}

func (p *page) text(sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
}

func (p *page) show(hash string) {
	p.t.Helper()
	eval[string](p, fmt.Sprintf(`location.hash = %q`, hash))
}

// shot saves a screenshot of the whole page: the viewport is stretched to
// the document's height for it (Chromium's capture beyond the viewport
// is not reliable in headless mode), then set back.
func (p *page) shot(name string) {
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	h, err := chromedp.Run(ctx, chromedp.Evaluate[int64](`Math.ceil(document.documentElement.scrollHeight)`))
	if err == nil {
		err = chromedp.Do(ctx, chromedp.EmulateViewport(p.width, max(h, p.height), chromedp.EmulateScale(p.scale)))
	}
	var png []byte
	if err == nil {
		png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	}
	if err == nil {
		err = chromedp.Do(ctx, chromedp.EmulateViewport(p.width, p.height, chromedp.EmulateScale(p.scale)))
	}
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(p.dir, name+".png"), png, 0o644); err != nil {
		p.t.Errorf("saving screenshot: %v", err)
	}
}

// viewport sets the page's size (CSS pixels) and pixel ratio.
func (p *page) viewport(width, height int64, scale float64) {
	p.t.Helper()
	p.width, p.height, p.scale = width, height, scale
	p.run("setting the viewport", 10*time.Second, chromedp.EmulateViewport(width, height, chromedp.EmulateScale(scale)))
}

// TestConsoleInBrowser uses the operator console as an operator would, in
// a real browser against a real server: a wrong key is refused, the status
// shows the isolation in force, a matplotlib chart comes back as an image
// the page renders, an uploaded CSV is read by the code, a running
// execution appears live and then in the history.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	p := &page{t: t, ctx: ctx, dir: artifacts(t)}
	p.viewport(1100, 800, 1)
	health := s.health(t)
	iso := health["isolation"].(map[string]any)
	cgVersion := fmt.Sprint(iso["cgroup"].(map[string]any)["version"])

	// A wrong key is refused by the server (401) and not kept.
	p.run("loading the console", 30*time.Second,
		chromedp.Navigate(s.url+"/console"), // redirected to /console/
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), "not-the-key"),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
	)
	p.until("the wrong key refused", `document.getElementById("login-error").textContent.includes("Key refused (401)")`, 10*time.Second)
	kept := eval[*string](p, `sessionStorage.getItem("codeexec.key")`)
	if kept != nil || !p.visible("#login") || p.visible("#status") {
		t.Fatalf("after a wrong key: stored %v, login shown %v", kept, p.visible("#login"))
	}
	p.shot("01-login-refused")

	// The right key: the status page reports the isolation in force.
	eval[string](p, `document.getElementById("key").value = ""`)
	p.run("signing in", 10*time.Second,
		chromedp.SendKeys(chromedp.ID("key"), s.key),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
	)
	p.until("status shown", `document.querySelector("#card-backend .card-value")?.textContent === "linux"`, 15*time.Second)
	p.until("doctor's findings shown", `document.querySelectorAll("#doctor tbody tr").length > 5`, 15*time.Second)
	if got := p.text("#card-cgroup .card-value"); got != "v"+cgVersion {
		t.Errorf("cgroup card %q, /health says version %s", got, cgVersion)
	}
	if got := p.text("#card-health .card-value"); got != "ok" {
		t.Errorf("health card %q", got)
	}
	if got, dir := p.text("#card-storage .card-value"), p.text("#card-storage .card-sub"); got != "local" || !strings.HasPrefix(dir, "/tmp/") {
		t.Errorf("storage card %q %q", got, dir)
	}
	if got := p.text("#doctor tbody"); !strings.Contains(got, "namespaces") || !strings.Contains(got, "cgroups") || strings.Contains(got, "sandbox run") {
		t.Errorf("doctor table %q", got)
	}
	p.shot("02-status")

	// Languages: Python installed, with its version.
	p.show("#languages")
	p.until("languages listed", `document.querySelector('#lang-table tr[data-lang="py"]') !== null`, 15*time.Second)
	if got := p.text(`#lang-table tr[data-lang="py"]`); !strings.Contains(got, "Python 3.") || !strings.HasSuffix(got, "yes") {
		t.Errorf("py row %q", got)
	}
	p.shot("03-languages")

	// Playground: a matplotlib chart is rendered from the downloaded PNG,
	// once the warm templates are up (the screenshot then shows a usual
	// run's time, not the first cold one's).
	p.show("#status")
	p.until("warm pool ready", `(() => { const m = /^(\d+) \/ (\d+) ready$/.exec(document.querySelector("#card-warm .card-value")?.textContent || ""); return !m || m[1] === m[2]; })()`, 60*time.Second)
	p.show("#playground")
	p.until("playground ready", `document.querySelector('#pg-lang option[value="py"]') !== null`, 15*time.Second)
	chart := `import matplotlib.pyplot as plt
quarters = ["Q1", "Q2", "Q3", "Q4"]
sales = [120, 135, 160, 190]
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.bar(quarters, sales, color="#2563eb")
ax.set_title("Sales by quarter")
ax.set_ylabel("units")
fig.tight_layout()
fig.savefig("/mnt/data/sales.png", dpi=100)
print("saved", ax.get_title())
`
	p.run("running the chart", 10*time.Second,
		chromedp.SetValue(chromedp.ID("pg-lang"), "py"),
		chromedp.SetValue(chromedp.ID("pg-code"), chart),
		chromedp.Click(chromedp.ID("pg-run")),
	)
	p.until("chart rendered", `(() => { const i = document.querySelector('#pg-outputs .output[data-name="sales.png"] img'); return !!i && i.complete && i.naturalWidth > 0; })()`, 60*time.Second)
	width := eval[int](p, `document.querySelector("#pg-outputs img").naturalWidth`)
	height := eval[int](p, `document.querySelector("#pg-outputs img").naturalHeight`)
	if width != 600 || height != 320 {
		t.Errorf("chart is %dx%d, want 600x320 (figsize 6x3.2 at 100 dpi)", width, height)
	}
	if st, out, errOut := p.text("#pg-status"), p.text("#pg-stdout"), p.text("#pg-stderr"); st != "ok" || out != "saved Sales by quarter\n" || errOut != "" {
		t.Errorf("chart run: status %q stdout %q stderr %q", st, out, errOut)
	}
	p.shot("04-playground-chart")

	// Upload a CSV, then read it back by running code.
	csv := filepath.Join(t.TempDir(), "sales.csv")
	if err := os.WriteFile(csv, []byte("city,units\nLyon,12\nOslo,7\nLima,23\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.run("uploading the CSV", 20*time.Second,
		chromedp.SetUploadFiles(chromedp.ID("pg-files"), []string{csv}),
		chromedp.Click(chromedp.ID("pg-upload")))
	p.until("CSV uploaded", `document.getElementById("pg-inputs").textContent === "/mnt/data/sales.csv"`, 20*time.Second)
	p.run("reading the CSV", 10*time.Second,
		chromedp.SetValue(chromedp.ID("pg-code"), "import pandas as pd\ndf = pd.read_csv('/mnt/data/sales.csv')\nprint(len(df), df['units'].sum(), df.loc[df['units'].idxmax(), 'city'])\n"),
		chromedp.Click(chromedp.ID("pg-run")))
	p.until("CSV read", `document.getElementById("pg-stdout").textContent !== "saved Sales by quarter\n"`, 60*time.Second)
	if st, out := p.text("#pg-status"), p.text("#pg-stdout"); st != "ok" || out != "3 42 Lima\n" {
		t.Errorf("CSV run: status %q stdout %q stderr %q", st, out, p.text("#pg-stderr"))
	}
	if got := p.text("#pg-outputs"); got != "No files written to /mnt/data." {
		t.Errorf("outputs of the CSV run: %q", got)
	}
	p.shot("05-playground-csv")

	// A running execution appears live, then leaves for the history.
	p.show("#live")
	p.until("live page", `!document.getElementById("live").hidden`, 5*time.Second)
	done := make(chan string, 1)
	go func() {
		code, body := s.request("POST", "/exec", `{"lang":"bash","code":"sleep 3; echo slept"}`)
		done <- fmt.Sprint(code, " ", string(body))
	}()
	p.until("the run shown live", `document.querySelector('#live-table tr[data-lang="bash"]') !== null`, 15*time.Second)
	if got := p.text(`#live-table tr[data-lang="bash"]`); !strings.HasPrefix(got, "bashkey.") {
		t.Errorf("live row %q: want language then the caller (its key's principal, a digest)", got)
	}
	p.shot("06-live")
	p.until("the run gone from the live list", `document.querySelector('#live-table tr[data-lang="bash"]') === null`, 30*time.Second)
	var res struct {
		Status, Stdout string
	}
	got := <-done
	if code, body, _ := strings.Cut(got, " "); code != "200" || json.Unmarshal([]byte(body), &res) != nil || res.Status != "ok" || res.Stdout != "slept\n" {
		t.Fatalf("the sleep run: %s", got)
	}

	// History: the runs with their figures and a chart per language.
	p.show("#history")
	p.until("history", `(() => { const r = document.querySelector('#hist-table tr[data-lang="bash"]'); return !!r && r.textContent.includes("ok"); })()`, 10*time.Second)
	p.until("py chart", `document.querySelectorAll('#hist-langs .lang-card[data-lang="py"] svg rect.bar').length === 2`, 10*time.Second)
	if got := p.text(`#hist-langs .lang-card[data-lang="bash"]`); !strings.Contains(got, "bash · 1 runs") || !strings.Contains(got, "p50 3.") {
		t.Errorf("bash card %q: want one run of about 3 s", got)
	}
	p.shot("07-history")

	// On a phone-sized screen.
	p.viewport(390, 844, 2)
	p.show("#status")
	p.until("status again", `document.querySelector("#card-backend .card-value")?.textContent === "linux"`, 15*time.Second)
	p.shot("08-status-phone")

	// Signing out forgets the key.
	p.run("signing out", 5*time.Second, chromedp.Click(chromedp.ID("logout")))
	kept = eval[*string](p, `sessionStorage.getItem("codeexec.key")`)
	if kept != nil || !p.visible("#login") {
		t.Errorf("after signing out: stored %v, login shown %v", kept, p.visible("#login"))
	}
}

func (p *page) visible(sel string) bool {
	return eval[bool](p, fmt.Sprintf(`!document.querySelector(%q).hidden`, sel))
}

// TestConsoleNeedsKeyAndCanBeOff: the console's data is behind the API
// key, and CODEEXEC_CONSOLE=false leaves no trace of it.
func TestConsoleNeedsKeyAndCanBeOff(t *testing.T) {
	on := startServer(t, "CODEEXEC_POOL_PYTHON=0")
	off := startServer(t, "CODEEXEC_POOL_PYTHON=0", "CODEEXEC_CONSOLE=false")
	for _, path := range []string{"/console/api/status", "/console/api/executions"} {
		req := func(s *server, key string) int {
			r, _ := http.NewRequest("GET", s.url+path, nil)
			if key != "" {
				r.Header.Set("X-API-Key", key)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if c := req(on, ""); c != 401 {
			t.Errorf("%s without a key: %d", path, c)
		}
		if c := req(on, "wrong"); c != 401 {
			t.Errorf("%s with a wrong key: %d", path, c)
		}
		if c := req(on, on.key); c != 200 {
			t.Errorf("%s with the key: %d", path, c)
		}
		if c := req(off, off.key); c != 404 {
			t.Errorf("%s with the console off: %d", path, c)
		}
	}
	for s, want := range map[*server]int{on: 200, off: 404} {
		resp, err := http.Get(s.url + "/console/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("/console/: %d, want %d", resp.StatusCode, want)
		}
	}
}
