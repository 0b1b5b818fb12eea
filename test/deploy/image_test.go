package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestImage builds the Dockerfile for real and drives the container: health, every
// language, upload/download, PORT, Docker's HEALTHCHECK, and the real LibreChat clients
// (test/e2e) through testdata/docker-serve.sh.
//
// No registry is reachable, so it runs its own dockerd (Debian's docker.io) without a
// bridge or iptables (containers use the host's network; traffic stays on loopback), with
// its data root under cacheDir so that the base image and the build cache persist between
// runs on the same machine, and makes debian:bookworm-slim itself with debootstrap.
//
// It never skips with CI=true; locally CODEEXEC_SKIP_IMAGE_TEST=1 skips it.
func TestImage(t *testing.T) {
	if os.Getenv("CODEEXEC_SKIP_IMAGE_TEST") == "1" {
		if !ci {
			t.Skip("CODEEXEC_SKIP_IMAGE_TEST=1: skipping the container image build (it never skips when CI=true)")
		}
		t.Log("CODEEXEC_SKIP_IMAGE_TEST=1 is ignored because CI=true")
	}
	if os.Geteuid() != 0 {
		if !ci {
			t.Skip("the image test runs its own dockerd: needs root")
		}
		t.Fatal("the image test runs its own dockerd: needs root")
	}
	root := repoRoot(t)
	start := time.Now()
	d := startDocker(t)
	t.Logf("dockerd ready after %s", time.Since(start).Round(100*time.Millisecond))

	// debian:bookworm-slim from debootstrap (once per machine: it stays in the data root).
	t0 := time.Now()
	mustRun(t, cmdSpec{env: d.env, timeout: 20 * time.Minute}, "bash",
		filepath.Join(root, "test/deploy/testdata/debian-base.sh"), filepath.Join(cacheDir, "rootfs"), "debian:bookworm-slim")
	t.Logf("base image ready after %s", time.Since(t0).Round(100*time.Millisecond))

	// The build. Cold (empty cache) it installs all of scripts/packages.txt; cached, it
	// recompiles the server only when its sources changed.
	const image = "codeexec:deploytest"
	buildArgs := []string{"build", "--network", "host", "--progress", "plain", "-t", image}
	// CAs this machine trusts beyond Debian's (a TLS-intercepting egress proxy): the build
	// fetches Go and npm packages over HTTPS through the same network.
	if extra := extraCACerts(t); extra != "" {
		buildArgs = append(buildArgs, "--build-arg", "EXTRA_CA_CERTS="+extra)
	}
	t0 = time.Now()
	out, err := runCmd(t, cmdSpec{dir: root, env: append(d.env, "DOCKER_BUILDKIT=1"), timeout: 60 * time.Minute},
		d.cli, append(buildArgs, ".")...)
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, tail(out, 12000))
	}
	buildTime := time.Since(t0)
	size := strings.TrimSpace(mustRun(t, cmdSpec{env: d.env}, d.cli, "image", "inspect", "-f", "{{.Size}}", image))
	sz, _ := strconv.ParseInt(size, 10, 64)
	t.Logf("docker build took %s; image %s is %.2f GiB", buildTime.Round(time.Second), image, float64(sz)/(1<<30))
	// Drop dangling images of earlier builds (the build cache stays).
	runCmd(t, cmdSpec{env: d.env}, d.cli, "image", "prune", "-f")

	serve := filepath.Join(root, "test/deploy/testdata/docker-serve.sh")
	wrapperEnv := append(d.env,
		"DEPLOYTEST_DOCKER="+d.cli,
		"DEPLOYTEST_IMAGE="+image,
		"DEPLOYTEST_CAPS="+strings.Join(leastCaps, " "),
		"DEPLOYTEST_SECURITY_OPTS="+strings.Join(leastSecurityOpts, " "),
	)
	// A container an interrupted earlier run left behind would share this
	// one's instance numbers, uids and their locked-memory budget.
	d.removeTestContainers(t)
	t.Cleanup(func() { d.removeTestContainers(t) })

	key := randomHex(16)
	c := startContainer(t, serve, append(wrapperEnv,
		"DEPLOYTEST_EXTRA_ARGS=--health-interval=2s --health-start-period=1s --ulimit memlock=8388608",
		"CODEEXEC_API_KEY="+key), "CODEEXEC_PORT")

	t.Run("health", func(t *testing.T) {
		var h map[string]any
		c.getJSON(t, "/health", key, &h)
		if h["status"] != "ok" || h["isolation"] == nil {
			t.Fatalf("/health = %v", h)
		}
		t.Logf("isolation: %v", h["isolation"])
		// On a v1 host the entrypoint remounts the freezer hierarchy too:
		// stateful sessions are frozen between calls in the container.
		iso, _ := h["isolation"].(map[string]any)
		if cg, _ := iso["cgroup"].(map[string]any); cg["version"] == 1.0 && cg["freezer"] != true {
			t.Errorf("cgroup v1 without the freezer in the container: %v", cg)
		}
		// With the documented memlock limit every warm template pins the
		// pages its runs write (a faster path, not a protection), once it
		// is ready.
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
			var h map[string]any
			c.getJSON(t, "/health", key, &h)
			iso, _ := h["isolation"].(map[string]any)
			warm, _ := iso["warm"].(map[string]any)
			py, _ := warm["python"].(map[string]any)
			pinned, _ := py["pinned_pages"].([]any)
			if py["ready"] != py["templates"] || len(pinned) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("warm templates not ready after 2 minutes: %v\n%s", warm, tail(c.out.String(), 6000))
				}
				continue
			}
			for _, n := range pinned {
				if f, _ := n.(float64); f <= 0 {
					t.Errorf("a warm template pinned no pages: %v", pinned)
					break
				}
			}
			break
		}
		// And the warm path serves runs in the container (its count of
		// runs served goes up), on a lean and on a preloaded template;
		// the code is pid 2, as in a cold run.
		served := func() float64 {
			var h map[string]any
			c.getJSON(t, "/health", key, &h)
			iso, _ := h["isolation"].(map[string]any)
			warm, _ := iso["warm"].(map[string]any)
			py, _ := warm["python"].(map[string]any)
			n, _ := py["served"].(float64)
			return n
		}
		for _, code := range []string{"import os\nprint(os.getpid())", "import os, numpy\nprint(os.getpid())"} {
			before := served()
			if r := c.exec(t, key, map[string]any{"lang": "py", "code": code}); r.Stdout != "2\n" || r.Stderr != "" || served() != before+1 {
				t.Errorf("%q did not run warm: %+v\n%s", code, r, tail(c.out.String(), 4000))
			}
		}
		// Docker's own HEALTHCHECK (curl inside the container) turns healthy.
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, _ := runCmd(t, cmdSpec{env: d.env}, d.cli, "inspect", "-f", "{{.State.Health.Status}}", c.name(t, d))
			st = strings.TrimSpace(st)
			if st == "healthy" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("container health = %q after 60 s", st)
			}
			time.Sleep(time.Second)
		}
	})

	t.Run("languages", func(t *testing.T) {
		var langs []struct {
			ID        string `json:"id"`
			Version   string `json:"version"`
			Available bool   `json:"available"`
			Missing   string `json:"missing"`
		}
		c.getJSON(t, "/languages", key, &langs)
		if len(langs) < 13 {
			t.Errorf("%d languages, want 13", len(langs))
		}
		for _, l := range langs {
			if !l.Available {
				t.Errorf("language %s unavailable in the image: %s", l.ID, l.Missing)
			}
		}
		for _, p := range helloPrograms {
			t.Run(p.lang, func(t *testing.T) {
				r := c.exec(t, key, map[string]any{"lang": p.lang, "code": p.code})
				if r.Stdout != p.want+"\n" || r.Status != "ok" || r.ExitCode != 0 || r.Stderr != "" {
					t.Errorf("%s: status %q stdout %q stderr %q, want stdout %q", p.lang, r.Status, r.Stdout, tail(r.Stderr, 1500), p.want)
				}
			})
		}
	})

	t.Run("files", func(t *testing.T) {
		up := c.upload(t, key, "in.csv", "x,y\n1,2\n3,4\n")
		code := `import pandas as pd, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
df = pd.read_csv("/mnt/data/in.csv")
print(int(df["y"].sum()))
df.plot(x="x", y="y"); plt.savefig("/mnt/data/plot.png")
open("/mnt/data/out.txt", "w").write("total=%d\n" % df["y"].sum())
`
		r := c.exec(t, key, map[string]any{"lang": "py", "code": code,
			"files": []map[string]string{{"id": up.fileID, "session_id": up.sessionID, "name": "in.csv"}}})
		if r.Stdout != "6\n" || r.Stderr != "" || r.Status != "ok" || r.ExitCode != 0 {
			t.Fatalf("status %q exit %d stdout %q stderr %q", r.Status, r.ExitCode, r.Stdout, tail(r.Stderr, 2000))
		}
		got := map[string]string{}
		for _, f := range r.Files {
			got[f.Name] = f.ID
		}
		if got["plot.png"] == "" || got["out.txt"] == "" {
			t.Fatalf("files %v, want plot.png and out.txt", r.Files)
		}
		body := c.download(t, key, r.SessionID, got["out.txt"])
		if body != "total=6\n" {
			t.Errorf("out.txt = %q", body)
		}
		// A chart, not only a PNG: the default 640x480 figure, with ink
		// (the line, axes, tick labels and legend) on a white background.
		img, err := png.Decode(strings.NewReader(c.download(t, key, r.SessionID, got["plot.png"])))
		if err != nil || img.Bounds().Dx() != 640 || img.Bounds().Dy() != 480 {
			t.Fatalf("plot.png: %v %v", err, img)
		}
		dark := 0
		for y := 0; y < 480; y++ {
			for x := 0; x < 640; x++ {
				if g := color.GrayModel.Convert(img.At(x, y)).(color.Gray); g.Y < 100 {
					dark++
				}
			}
		}
		if dark < 1500 { // 3066 when drawn by Debian 12's matplotlib
			t.Errorf("plot.png has %d dark pixels: no axes or labels drawn", dark)
		}
	})

	t.Run("PORT", func(t *testing.T) {
		// Cloud Run sets PORT only; the server and the HEALTHCHECK must follow it.
		p := startContainer(t, serve, append(wrapperEnv, "CODEEXEC_API_KEY="+key), "PORT")
		var h map[string]any
		p.getJSON(t, "/health", "", &h)
		if h["status"] != "ok" {
			t.Errorf("/health on PORT = %v", h)
		}
		p.stop(t)
	})

	t.Run("compose-up", func(t *testing.T) {
		// docker-compose.yml itself (its privileges, tmpfs, limits, volume, healthcheck) with
		// the image just built; an override puts it on the host's network (this daemon has
		// no bridge) on a free loopback port.
		compose := needTool(t, "docker-compose", "docker-compose")
		port := freePort(t)
		// A copy of docker-compose.yml on the host's network: without `ports:` (Compose
		// refuses port bindings with network_mode host), everything else as it is.
		file := filepath.Join(t.TempDir(), "docker-compose.yml")
		mustRun(t, cmdSpec{}, "python3", "-c", `import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
s = d["services"]["codeexec"]
s.pop("ports", None)
s["network_mode"] = "host"
s["environment"]["CODEEXEC_PORT"] = sys.argv[3]
s["build"]["context"] = sys.argv[4]
yaml.safe_dump(d, open(sys.argv[2], "w"))`, filepath.Join(root, "docker-compose.yml"), file, port, root)
		project := "codeexecdeploytest"
		env := append(d.env, "CODEEXEC_IMAGE="+image, "CODEEXEC_API_KEY="+key, "COMPOSE_PROJECT_NAME="+project)
		args := []string{"-f", file}
		t.Cleanup(func() {
			out, err := runCmd(t, cmdSpec{dir: root, env: env, timeout: 3 * time.Minute}, compose, append(args, "down", "-v", "-t", "30")...)
			if err != nil {
				t.Errorf("docker-compose down: %v\n%s", err, out)
			}
		})
		mustRun(t, cmdSpec{dir: root, env: env, timeout: 5 * time.Minute}, compose, append(args, "up", "-d", "--no-build")...)
		cc := &container{url: "http://127.0.0.1:" + port, out: &syncBuffer{}, done: true}
		deadline := time.Now().Add(90 * time.Second)
		for {
			resp, err := http.Get(cc.url + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				logs, _ := runCmd(t, cmdSpec{dir: root, env: env}, compose, append(args, "logs")...)
				t.Fatalf("docker-compose service not healthy after 90 s\n%s", tail(logs, 5000))
			}
			time.Sleep(300 * time.Millisecond)
		}
		r := cc.exec(t, key, map[string]any{"lang": "py", "code": "open('/mnt/data/a.txt','w').write('x'); print(2**10)"})
		if r.Stdout != "1024\n" || len(r.Files) != 1 {
			t.Errorf("exec under docker-compose: %+v", r)
		}
		if out := mustRun(t, cmdSpec{dir: root, env: env}, compose, append(args, "exec", "-T", "codeexec", "ls", "/tmp/codeexec")...); strings.TrimSpace(out) == "" {
			t.Error("nothing stored in the /tmp/codeexec volume")
		}
	})

	t.Run("librechat-e2e", func(t *testing.T) {
		// The real LibreChat clients (both generations) against the container: the e2e test
		// runs CODEEXEC_E2E_BIN as its server, here the wrapper that runs the image.
		t0 := time.Now()
		out, err := runCmd(t, cmdSpec{dir: root, timeout: 25 * time.Minute, env: append(wrapperEnv,
			"CODEEXEC_E2E_BIN="+serve, "CODEEXEC_E2E=1")},
			goBin(), "test", "-count=1", "-timeout", "20m", "-run", "TestLibreChatClients", "-v", "./test/e2e/")
		t.Logf("LibreChat client e2e against the container took %s", time.Since(t0).Round(time.Second))
		logPath := filepath.Join(cacheDir, "e2e-last.log")
		_ = os.WriteFile(logPath, []byte(out), 0o644)
		if err != nil {
			// The failing checks first (the whole output is long), then the end.
			var fails []string
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "FAIL") || strings.Contains(line, "Error") || strings.Contains(line, "error") {
					fails = append(fails, line)
				}
			}
			t.Fatalf("test/e2e against the image: %v (whole output: %s)\n--- failing lines:\n%s\n--- end:\n%s",
				err, logPath, tail(strings.Join(fails, "\n"), 12000), tail(out, 4000))
		}
		if !strings.Contains(out, "--- PASS: TestLibreChatClients") {
			t.Fatalf("test/e2e did not pass:\n%s", tail(out, 8000))
		}
	})

	c.stop(t)
	t.Logf("TestImage total %s", time.Since(start).Round(time.Second))
}

// extraCACerts returns the PEM certificates of /usr/local/share/ca-certificates (local
// additions to the system's trust store), or "".
func extraCACerts(t *testing.T) string {
	files, _ := filepath.Glob("/usr/local/share/ca-certificates/*.crt")
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(bytes.TrimSpace(data))
		b.WriteByte('\n')
	}
	if b.Len() > 0 {
		t.Logf("build trusts the extra CA certificates of %v", files)
	}
	return strings.TrimSpace(b.String())
}

var helloPrograms = []struct{ lang, code, want string }{
	{"py", "import numpy, pandas, scipy, sklearn, matplotlib\nprint('hello from py')", "hello from py"},
	{"bash", "echo hello from bash", "hello from bash"},
	{"js", "console.log('hello from js')", "hello from js"},
	{"ts", "const s: string = 'hello from ts'; console.log(s)", "hello from ts"},
	{"c", "#include <stdio.h>\nint main(void){puts(\"hello from c\");return 0;}", "hello from c"},
	{"cpp", "#include <iostream>\nint main(){std::cout<<\"hello from cpp\"<<std::endl;}", "hello from cpp"},
	{"java", "public class Main { public static void main(String[] a) { System.out.println(\"hello from java\"); } }", "hello from java"},
	{"php", "<?php echo \"hello from php\\n\";", "hello from php"},
	{"rs", "fn main() { println!(\"hello from rs\"); }", "hello from rs"},
	{"go", "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello from go\") }", "hello from go"},
	{"d", "import std.stdio;\nvoid main() { writeln(\"hello from d\"); }", "hello from d"},
	{"f90", "program hello\n  print '(a)', 'hello from f90'\nend program hello", "hello from f90"},
	{"r", "cat('hello from r\\n')", "hello from r"},
}

// ---------------------------------------------------------------------------
// dockerd

// cacheDir persists between runs on one machine: the daemon's data root (base image,
// layers, build cache).
const cacheDir = "/var/cache/codeexec-docker"

const dockerSock = "/run/codeexec-docker.sock"

type docker struct {
	cli string
	env []string // DOCKER_HOST, and a PATH whose docker is cli
}

func startDocker(t *testing.T) *docker {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/dockerd"); err != nil {
		t.Log("no dockerd: installing Debian's docker.io")
		aptInstall(t, "docker.io")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		aptInstall(t, "debootstrap")
	}
	// Debian's CLI matches Debian's daemon (and has BuildKit built in); another docker
	// CLI on PATH (/usr/local/bin) might not.
	cli := "/usr/bin/docker"
	if _, err := os.Stat(cli); err != nil {
		t.Fatalf("docker.io installed but %s missing", cli)
	}
	bin := t.TempDir()
	if err := os.Symlink(cli, filepath.Join(bin, "docker")); err != nil {
		t.Fatal(err)
	}
	d := &docker{cli: cli, env: []string{"DOCKER_HOST=unix://" + dockerSock, "PATH=" + bin + ":" + os.Getenv("PATH")}}
	if _, err := runCmd(t, cmdSpec{env: d.env, timeout: 10 * time.Second}, cli, "version"); err == nil {
		t.Logf("using the dockerd already serving %s", dockerSock)
		return d
	}
	for _, dir := range []string{cacheDir + "/data"} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.OpenFile(cacheDir+"/dockerd.log", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/sbin/dockerd",
		"--data-root", cacheDir+"/data",
		"--exec-root", "/run/codeexec-docker",
		"--pidfile", "/run/codeexec-docker.pid",
		"-H", "unix://"+dockerSock,
		// No bridge, no iptables rules, no NAT: containers get --network host (loopback
		// only here) or none.
		"--bridge=none", "--iptables=false", "--ip-masq=false",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := runCmd(t, cmdSpec{env: d.env, timeout: 5 * time.Second}, cli, "version"); err == nil {
			return d
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(cacheDir + "/dockerd.log")
			t.Fatalf("dockerd exited: %v\n%s", err, tail(string(log), 4000))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(cacheDir + "/dockerd.log")
			t.Fatalf("dockerd not ready after 90 s\n%s", tail(string(log), 4000))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// removeTestContainers leaves no container of this test running.
func (d *docker) removeTestContainers(t *testing.T) {
	out, err := runCmd(t, cmdSpec{env: d.env}, d.cli, "ps", "-aq", "--filter", "label=codeexec-deploytest=1")
	if err != nil {
		t.Logf("docker ps: %v %s", err, out)
		return
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		t.Logf("removing %d leftover container(s)", len(ids))
		runCmd(t, cmdSpec{env: d.env}, d.cli, append([]string{"rm", "-f"}, ids...)...)
	}
}

// ---------------------------------------------------------------------------
// a running container

type container struct {
	url    string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan error
	done   bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// startContainer runs the wrapper (docker run ... serve) with the port in portVar and
// waits for /health.
func startContainer(t *testing.T, serve string, env []string, portVar string) *container {
	t.Helper()
	port := freePort(t)
	var clean []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CODEEXEC_") || strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "CODE_API_KEY=") {
			continue
		}
		clean = append(clean, kv)
	}
	cmd := exec.Command("bash", serve, "serve")
	cmd.Env = append(append(clean, env...), portVar+"="+port)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &container{url: "http://127.0.0.1:" + port, cmd: cmd, out: out, exited: make(chan error, 1)}
	go func() { c.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if !c.done {
			c.stop(t)
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(c.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Logf("container serving on %s (%s)", c.url, portVar)
				return c
			}
		}
		select {
		case err := <-c.exited:
			c.done = true
			t.Fatalf("container exited: %v\n%s", err, tail(out.String(), 6000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /health after 90 s\n%s", tail(out.String(), 6000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// name returns the container's name (the wrapper's docker run --name).
func (c *container) name(t *testing.T, d *docker) string {
	t.Helper()
	out := mustRun(t, cmdSpec{env: d.env}, d.cli, "ps", "--filter", "label=codeexec-deploytest=1", "--format", "{{.Names}}")
	// One container per wrapper process: the name carries the wrapper's pid.
	want := fmt.Sprintf("codeexec-deploytest-%d-", c.cmd.Process.Pid)
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], want) {
			return f[0]
		}
	}
	t.Fatalf("container %s* not found in:\n%s", want, out)
	return ""
}

// stop sends SIGTERM (docker run forwards it to the server) and wants a clean exit.
func (c *container) stop(t *testing.T) {
	t.Helper()
	if c.done {
		return
	}
	c.done = true
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		if err != nil {
			t.Errorf("server exited with %v after SIGTERM\n%s", err, tail(c.out.String(), 4000))
		}
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
		t.Errorf("server did not stop within 60 s of SIGTERM\n%s", tail(c.out.String(), 4000))
	}
}

func (c *container) do(t *testing.T, method, path, key, ctype string, body io.Reader) []byte {
	t.Helper()
	req, err := http.NewRequest(method, c.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	cl := &http.Client{Timeout: 3 * time.Minute}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: HTTP %d: %s\nserver log:\n%s", method, path, resp.StatusCode, tail(string(data), 2000), tail(c.out.String(), 3000))
	}
	return data
}

func (c *container) getJSON(t *testing.T, path, key string, v any) {
	t.Helper()
	if err := json.Unmarshal(c.do(t, "GET", path, key, "", nil), v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

type execResult struct {
	SessionID string `json:"session_id"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Status    string `json:"status"`
	ExitCode  int    `json:"exit_code"`
	Files     []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"files"`
}

func (c *container) exec(t *testing.T, key string, req map[string]any) execResult {
	t.Helper()
	body, _ := json.Marshal(req)
	var r execResult
	if err := json.Unmarshal(c.do(t, "POST", "/exec", key, "application/json", bytes.NewReader(body)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

type uploaded struct{ sessionID, fileID string }

func (c *container) upload(t *testing.T, key, name, content string) uploaded {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("entity_id", "deploytest")
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(fw, content)
	mw.Close()
	var r struct {
		SessionID string `json:"session_id"`
		Files     []struct {
			FileID   string `json:"fileId"`
			Filename string `json:"filename"`
		} `json:"files"`
	}
	data := c.do(t, "POST", "/upload", key, mw.FormDataContentType(), &buf)
	if err := json.Unmarshal(data, &r); err != nil || r.SessionID == "" || len(r.Files) != 1 {
		t.Fatalf("upload: %v %s", err, data)
	}
	return uploaded{r.SessionID, r.Files[0].FileID}
}

func (c *container) download(t *testing.T, key, session, id string) string {
	t.Helper()
	return string(c.do(t, "GET", "/download/"+session+"/"+id, key, "", nil))
}
