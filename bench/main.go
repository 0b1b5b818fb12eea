// Command bench measures codeexec against bare process starts on the same
// machine, in one run, interleaved (this machine's speed drifts: only
// side-by-side ratios mean something): A. /exec print(1) vs a bare
// python3 -c 'print(1)'; B. the same with numpy, pandas and matplotlib
// imported; C. sustained executions per second at concurrency 1, 4, 16 vs
// bare spawning; D. C hello world compiled the first time, cached, and bare
// gcc && ./a.out; E. the server's RSS idle and under load. It prints a table
// with ratios and the machine, writes a JSON result file, and exits non-zero
// only when an execution failed. Every loop is bounded in count and time.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	key       = "bench-key-0123456789"
	python    = "/usr/bin/python3"
	heavyCode = "import numpy, pandas, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot\nprint(pandas.DataFrame({'a': numpy.arange(3)}).a.sum())"
	// chartCode draws what users most ask for: a chart with a title,
	// labels and a legend, saved as PNG (argv[1], else chart.png).
	chartCode = "import sys, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n" +
		"plt.plot([1, 3, 2], label='series'); plt.title('Sales'); plt.xlabel('month'); plt.ylabel('units')\n" +
		"plt.legend(); plt.savefig(sys.argv[1] if len(sys.argv) > 1 else 'chart.png'); print('saved')"
	cHello = "#include <stdio.h>\nint main(void) { printf(\"hello %d\\n\", NUM); return 0; }\n"
)

// bareEnv is a clean environment: Debian's python3, no pyenv shim, none of
// this shell's variables.
var bareEnv = []string{"PATH=/usr/bin:/bin"}

type stats struct {
	N     int     `json:"n"`
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
}

type throughput struct {
	Concurrency int     `json:"concurrency"`
	ServerPerS  float64 `json:"server_per_s"`
	BarePerS    float64 `json:"bare_per_s"`
	Ratio       float64 `json:"ratio"`
	Errors      int     `json:"errors"`
}

type result struct {
	Machine map[string]string `json:"machine"`
	When    string            `json:"when"`
	A       struct {
		Server stats   `json:"server"`
		Bare   stats   `json:"bare"`
		Ratio  float64 `json:"ratio_p50"`
	} `json:"a_print"`
	B struct {
		Server stats   `json:"server"`
		Bare   stats   `json:"bare"`
		Ratio  float64 `json:"ratio_p50"`
	} `json:"b_heavy_import"`
	Chart struct {
		Server stats   `json:"server"`
		Bare   stats   `json:"bare"`
		Ratio  float64 `json:"ratio_p50"`
	} `json:"b_chart_png"`
	C []throughput `json:"c_throughput"`
	D struct {
		First       stats   `json:"first_compile_and_run"`
		Cached      stats   `json:"cached"`
		Bare        stats   `json:"bare_gcc_and_run"`
		RatioCached float64 `json:"ratio_cached_to_first"`
	} `json:"d_compile_cache"`
	E struct {
		IdleRSSMB        float64 `json:"server_idle_rss_mb"`
		LoadRSSMB        float64 `json:"server_load_rss_mb"`
		SandboxIdleMB    float64 `json:"sandboxes_idle_mb"`
		SandboxLoadMaxMB float64 `json:"sandboxes_load_max_mb"`
	} `json:"e_memory"`
	WarmPath bool            `json:"warm_path_active"`
	Targets  map[string]bool `json:"targets_met"`
	Errors   []string        `json:"errors"`
}

type bench struct {
	url    string
	client *http.Client
	pid    int
	mu     sync.Mutex
	errs   []string
}

func main() {
	server := flag.String("server", "bin/codeexec", "codeexec binary to start")
	out := flag.String("out", "bench/results.json", "JSON result file")
	n := flag.Int("n", 60, "samples per latency series (A)")
	heavyN := flag.Int("heavy", 12, "samples of B")
	dur := flag.Duration("duration", 4*time.Second, "length of each throughput run (C)")
	flag.Parse()
	if err := run(*server, *out, *n, *heavyN, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(server, out string, n, heavyN int, dur time.Duration) error {
	tmp, err := os.MkdirTemp("", "codeexec-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	_ = os.Chmod(tmp, 0o711)
	port, err := freePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(server, "serve")
	cmd.Env = append(os.Environ(),
		"CODEEXEC_PORT="+strconv.Itoa(port), "CODEEXEC_API_KEY="+key,
		"CODEEXEC_STORAGE_DIR="+filepath.Join(tmp, "storage"), "CODEEXEC_RUN_DIR="+filepath.Join(tmp, "run"),
		"CODEEXEC_LOG_LEVEL=warn", "CODEEXEC_MAX_QUEUE=256")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	}()
	b := &bench{url: fmt.Sprintf("http://127.0.0.1:%d", port), pid: cmd.Process.Pid,
		client: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	fmt.Println("starting the server and waiting for its warm pool ...")
	if err := b.waitReady(3 * time.Minute); err != nil {
		return fmt.Errorf("%w\nserver log:\n%s", err, logs.String())
	}

	var r result
	r.When = time.Now().UTC().Format(time.RFC3339)
	r.Machine = machine()
	before, _ := b.warmServed()
	if o, _ := b.exec("py", "print(1)"); o == "1\n" {
		after, _ := b.warmServed()
		r.WarmPath = after == before+1
	}
	time.Sleep(500 * time.Millisecond)
	r.E.IdleRSSMB = rssMB(b.pid)
	r.E.SandboxIdleMB = sandboxMB()

	fmt.Println("A: print(1) ...")
	sa, ba := b.interleaved(n, func() error { return b.expect("py", "print(1)", "1\n") },
		func() error { return bare(python, "-c", "print(1)") })
	r.A.Server, r.A.Bare, r.A.Ratio = sa, ba, sa.P50MS/ba.P50MS

	fmt.Println("B: numpy + pandas + matplotlib ...")
	sb, bb := b.interleaved(heavyN, func() error { return b.expect("py", heavyCode, "3\n") },
		func() error { return bare(python, "-c", heavyCode) })
	r.B.Server, r.B.Bare, r.B.Ratio = sb, bb, sb.P50MS/bb.P50MS

	fmt.Println("B: a chart with a title and labels, saved as PNG ...")
	chartPNG := filepath.Join(tmp, "chart.png")
	sc, bc := b.interleaved(heavyN, func() error { return b.expect("py", chartCode, "saved\n") },
		func() error { return bare(python, "-c", chartCode, chartPNG) })
	r.Chart.Server, r.Chart.Bare, r.Chart.Ratio = sc, bc, sc.P50MS/bc.P50MS

	var loadRSS, loadSandbox atomic.Int64
	stop := make(chan struct{})
	go func() { // E under load: sampled during C
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				maxInt(&loadRSS, int64(rssMB(b.pid)*1024))
				maxInt(&loadSandbox, int64(sandboxMB()*1024))
			}
		}
	}()
	for _, c := range []int{1, 4, 16} {
		fmt.Printf("C: throughput at concurrency %d ...\n", c)
		srv, errs := b.throughput(c, dur, func() error { return b.expect("py", "print(1)", "1\n") })
		br, berrs := b.throughput(c, dur, func() error { return bare(python, "-c", "print(1)") })
		r.C = append(r.C, throughput{Concurrency: c, ServerPerS: srv, BarePerS: br, Ratio: srv / br, Errors: errs + berrs})
	}
	close(stop)
	r.E.LoadRSSMB = float64(loadRSS.Load()) / 1024
	r.E.SandboxLoadMaxMB = float64(loadSandbox.Load()) / 1024

	fmt.Println("D: C hello world ...")
	if _, err := os.Stat("/usr/bin/gcc"); err != nil {
		b.fail("D skipped: no /usr/bin/gcc")
	} else {
		dir := filepath.Join(tmp, "gcc")
		os.MkdirAll(dir, 0o755)
		seq := time.Now().UnixNano() % 1000000000
		fixed := strings.Replace(cHello, "NUM", "42", 1)
		_ = b.expect("c", fixed, "hello 42\n") // fills the cache
		var first, cached, bareC []float64
		for i := 0; i < 8; i++ {
			seq++
			src := strings.Replace(cHello, "NUM", strconv.FormatInt(seq, 10), 1)
			first = append(first, timed(func() error { return b.expect("c", src, fmt.Sprintf("hello %d\n", seq)) }))
			cached = append(cached, timed(func() error { return b.expect("c", fixed, "hello 42\n") }))
			bareC = append(bareC, timed(func() error { return bareGCC(dir, src) }))
		}
		r.D.First, r.D.Cached, r.D.Bare = summarize(first), summarize(cached), summarize(bareC)
		r.D.RatioCached = r.D.Cached.P50MS / r.D.First.P50MS
	}

	c4 := 0.0
	for _, t := range r.C {
		if t.Concurrency == 4 {
			c4 = t.Ratio
		}
	}
	r.Targets = map[string]bool{
		"A <= 0.4x bare":            r.A.Ratio <= 0.4,
		"B <= 0.05x bare":           r.B.Ratio <= 0.05,
		"C(4) >= 2.5x bare":         c4 >= 2.5,
		"D cached <= 0.2x first":    r.D.RatioCached > 0 && r.D.RatioCached <= 0.2,
		"no errors":                 len(b.errs) == 0,
		"warm path served print(1)": r.WarmPath,
	}
	r.Errors = b.errs
	report(os.Stdout, &r)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err == nil {
		data, _ := json.MarshalIndent(&r, "", "  ")
		if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Println("results written to", out)
	}
	if len(b.errs) > 0 {
		return fmt.Errorf("%d errors", len(b.errs))
	}
	return nil
}

func maxInt(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// health asks /health for its details, which need the key.
func (b *bench) health() (*http.Response, error) {
	req, _ := http.NewRequest("GET", b.url+"/health", nil)
	req.Header.Set("X-API-Key", key)
	return b.client.Do(req)
}

// waitReady waits for /health and for every warm template to have a child parked.
func (b *bench) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := b.health()
		if err == nil {
			var h struct {
				Isolation struct {
					Backend string `json:"backend"`
					Warm    struct {
						Python struct {
							Templates int `json:"templates"`
							Ready     int `json:"ready"`
						} `json:"python"`
					} `json:"warm"`
				} `json:"isolation"`
			}
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 && h.Isolation.Backend != "" && h.Isolation.Warm.Python.Ready == h.Isolation.Warm.Python.Templates {
				time.Sleep(time.Second) // the spares behind the first
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("server not ready after %v", limit)
}

// warmServed is the number of runs the server's warm pool has served.
func (b *bench) warmServed() (int64, error) {
	resp, err := b.health()
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var h struct {
		Isolation struct {
			Warm struct {
				Python struct {
					Served int64 `json:"served"`
				} `json:"python"`
			} `json:"warm"`
		} `json:"isolation"`
	}
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h.Isolation.Warm.Python.Served, err
}

func (b *bench) fail(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) < 50 {
		b.errs = append(b.errs, msg)
	}
}

// exec posts code to /exec and returns stdout.
func (b *bench) exec(lang, code string) (string, error) {
	body, _ := json.Marshal(map[string]any{"lang": lang, "code": code})
	req, _ := http.NewRequest("POST", b.url+"/exec", bytes.NewReader(body))
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, data)
	}
	var r struct {
		Stdout string `json:"stdout"`
		Stderr string `json:"stderr"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return "", err
	}
	if r.Status != "ok" || r.Stderr != "" {
		// A run that succeeds with a complaint on stderr (a chart drawn
		// with broken fonts) is no success.
		return r.Stdout, fmt.Errorf("status %s: stderr %.300q", r.Status, r.Stderr)
	}
	return r.Stdout, nil
}

func (b *bench) expect(lang, code, want string) error {
	got, err := b.exec(lang, code)
	if err == nil && got != want {
		err = fmt.Errorf("stdout %q, want %q", got, want)
	}
	if err != nil {
		b.fail(lang + ": " + err.Error())
	}
	return err
}

func bare(argv ...string) error {
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = bareEnv
	c.Stdout, c.Stderr = io.Discard, io.Discard
	return c.Run()
}

func bareGCC(dir, src string) error {
	if err := os.WriteFile(filepath.Join(dir, "main.c"), []byte(src), 0o644); err != nil {
		return err
	}
	c := exec.Command("/bin/sh", "-c", "gcc -O2 -pipe -o a.out main.c -lm && ./a.out")
	c.Dir, c.Env, c.Stdout, c.Stderr = dir, bareEnv, io.Discard, io.Discard
	return c.Run()
}

func timed(f func() error) float64 {
	t := time.Now()
	_ = f()
	return float64(time.Since(t).Microseconds()) / 1000
}

// interleaved alternates the two series, so drift hits both alike.
func (b *bench) interleaved(n int, server, bareF func() error) (stats, stats) {
	var s, r []float64
	for i := 0; i < 3; i++ { // warm-up, not counted
		server()
		bareF()
	}
	for i := 0; i < n; i++ {
		s = append(s, timed(server))
		t := time.Now()
		if err := bareF(); err != nil {
			b.fail("bare: " + err.Error())
		}
		r = append(r, float64(time.Since(t).Microseconds())/1000)
	}
	return summarize(s), summarize(r)
}

// throughput runs f from c workers for d (and at most 20000 times).
func (b *bench) throughput(c int, d time.Duration, f func() error) (float64, int) {
	var done, errs atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && done.Load() < 20000 {
				if err := f(); err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds(), int(errs.Load())
}

func summarize(xs []float64) stats {
	if len(xs) == 0 {
		return stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(p float64) float64 { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return stats{N: len(s), P50MS: round(q(0.5)), P99MS: round(q(0.99))}
}

func round(x float64) float64 { return float64(int(x*100+0.5)) / 100 }

func rssMB(pid int) float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return round(kb / 1024)
		}
	}
	return 0
}

// sandboxMB is the anonymous and tmpfs memory charged to every codeexec
// cgroup (templates, parked children, runs): cgroup v1 or v2 memory.stat.
// Page cache is left out: it is reclaimable and includes files any earlier
// process read.
func sandboxMB() float64 {
	for _, c := range []struct{ path, anon, shmem string }{
		{"/sys/fs/cgroup/memory/codeexec/memory.stat", "total_rss", "total_shmem"},
		{"/sys/fs/cgroup/codeexec/memory.stat", "anon", "shmem"},
	} {
		data, err := os.ReadFile(c.path)
		if err != nil {
			continue
		}
		var n float64
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) == 2 && (f[0] == c.anon || f[0] == c.shmem) {
				v, _ := strconv.ParseFloat(f[1], 64)
				n += v
			}
		}
		return round(n / (1 << 20))
	}
	return 0
}

func machine() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m["model"] = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				m["memory"] = strings.Join(strings.Fields(l)[1:], " ")
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if out, err := exec.Command(python, "--version").Output(); err == nil {
		m["python"] = strings.TrimSpace(string(out))
	}
	return m
}

func report(w io.Writer, r *result) {
	fmt.Fprintf(w, "\ncodeexec bench  %s\nmachine: %s, %s CPUs, %s, kernel %s, load %s, %s\nwarm path active: %v\n\n",
		r.When, r.Machine["model"], r.Machine["nproc"], r.Machine["memory"], r.Machine["kernel"], r.Machine["loadavg_at_start"], r.Machine["python"], r.WarmPath)
	fmt.Fprintf(w, "%-44s %12s %12s %12s %12s %8s\n", "", "codeexec p50", "p99", "bare p50", "p99", "ratio")
	row := func(name string, s, b stats, ratio float64) {
		fmt.Fprintf(w, "%-44s %10.2fms %10.2fms %10.2fms %10.2fms %7.3fx\n", name, s.P50MS, s.P99MS, b.P50MS, b.P99MS, ratio)
	}
	row("A /exec print(1) vs python3 -c", r.A.Server, r.A.Bare, r.A.Ratio)
	row("B /exec numpy+pandas+matplotlib vs bare", r.B.Server, r.B.Bare, r.B.Ratio)
	row("B chart with title and labels to PNG", r.Chart.Server, r.Chart.Bare, r.Chart.Ratio)
	fmt.Fprintf(w, "\n%-44s %12s %12s %8s %8s\n", "C sustained print(1)", "codeexec/s", "bare/s", "ratio", "errors")
	for _, t := range r.C {
		fmt.Fprintf(w, "%-44s %12.1f %12.1f %7.2fx %8d\n", fmt.Sprintf("  concurrency %d", t.Concurrency), t.ServerPerS, t.BarePerS, t.Ratio, t.Errors)
	}
	fmt.Fprintf(w, "\n%-44s %12s %12s\n", "D C hello world", "p50", "p99")
	fmt.Fprintf(w, "%-44s %10.2fms %10.2fms\n", "  /exec, first compile + run", r.D.First.P50MS, r.D.First.P99MS)
	fmt.Fprintf(w, "%-44s %10.2fms %10.2fms   %.3fx of first\n", "  /exec, cached program", r.D.Cached.P50MS, r.D.Cached.P99MS, r.D.RatioCached)
	fmt.Fprintf(w, "%-44s %10.2fms %10.2fms\n", "  bare gcc && ./a.out", r.D.Bare.P50MS, r.D.Bare.P99MS)
	fmt.Fprintf(w, "\nE memory: server RSS idle %.1f MB, under load (max) %.1f MB; sandboxes (templates, parked children, runs) idle %.1f MB, under load (max) %.1f MB\n\n",
		r.E.IdleRSSMB, r.E.LoadRSSMB, r.E.SandboxIdleMB, r.E.SandboxLoadMaxMB)
	names := make([]string, 0, len(r.Targets))
	for k := range r.Targets {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		met := "NOT MET"
		if r.Targets[k] {
			met = "met"
		}
		fmt.Fprintf(w, "target %-32s %s\n", k, met)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}
