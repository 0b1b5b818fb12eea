package api

// The attack suite: hostile code and hostile requests through the real HTTP
// API and the real sandbox. Each test asserts containment, then that the
// server is healthy and nothing of the attack is left on the host.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/auth"
	"github.com/codeexec/codeexec/internal/engine"
)

// sandboxProcesses lists host processes running as one of this server's
// sandbox uids (other test packages run sandboxes of their own meanwhile).
func (e *env) sandboxProcesses() []string {
	t := e.t
	t.Helper()
	if e.box.Describe().Backend == "gvisor" {
		return e.gvisorProcesses()
	}
	iso := e.box.Describe()
	if iso.UIDSpan == 0 {
		t.Fatalf("no uid band in %+v", iso)
	}
	lo := uint64(iso.UIDBase)
	hi := lo + uint64(iso.UIDSpan)*uint64(iso.Slots)
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, st := range dirs {
		f, err := os.Open(st)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "Name:") {
				name = strings.TrimSpace(line[5:])
			}
			if strings.HasPrefix(line, "Uid:") {
				fields := strings.Fields(line)
				if uid, err := strconv.ParseUint(fields[1], 10, 32); err == nil && uid >= lo && uid < hi {
					out = append(out, st+" "+name)
				}
				break
			}
		}
		f.Close()
	}
	return out
}

// assertClean checks that the server still executes code and that no
// process, mount or file of an execution is left.
func (e *env) assertClean() {
	e.t.Helper()
	r := e.exec(map[string]any{"lang": "py", "code": "print('still fine')"})
	if r.Stdout != "still fine\n" || r.Status != "ok" {
		e.t.Fatalf("server unhealthy after attack: %+v", r)
	}
	// Processes die with their pid namespace; give the kernel a moment.
	deadline := time.Now().Add(3 * time.Second)
	for len(e.sandboxProcesses()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if p := e.sandboxProcesses(); len(p) > 0 {
		e.t.Fatalf("sandbox processes left on the host: %v", p)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mi, []byte(e.runDir)) {
		e.t.Fatalf("mounts left under %s", e.runDir)
	}
	if l := e.leftovers(); len(l) > 0 {
		e.t.Fatalf("files left: %v", l)
	}
}

// TestAttackForkBomb: the bomb is contained and leaves nothing. Under gVisor
// it meets its time limit before the process limit (forks are slow there):
// TestAttackProcessLimit shows that limit on every backend.
func TestAttackForkBomb(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	start := time.Now()
	r := e.exec(map[string]any{"lang": "bash", "code": "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", "timeout": 4000})
	if time.Since(start) > 15*time.Second {
		t.Fatalf("fork bomb took %v", time.Since(start))
	}
	// An unlimited bomb also ends (at its time limit): what shows the limit
	// is bash failing to fork. TestAttackProcessLimit counts.
	if !strings.Contains(r.Stderr, "/tmp/code/main.sh: fork: retry: Resource temporarily unavailable\n") {
		t.Fatalf("fork bomb was not limited: status %q stderr %q", r.Status, truncateString(r.Stderr, 2000))
	}
	e.assertClean()
}

// TestAttackProcessLimit counts how many processes the code can have: the
// pids limit (64 here, plus the native sandbox's 16 for its init's
// threads) stops it with EAGAIN. Under gVisor 64 forks of this Python
// outlast the CPU limit; TestGVisorForkBomb (internal/sandbox) counts there
// with a lower limit.
func TestAttackProcessLimit(t *testing.T) {
	if !onBackends(t, cold, warm) {
		return
	}
	e := newEnv(t)
	r := e.ok(map[string]any{"lang": "py", "code": `import os, errno, signal
kids = []
try:
    while len(kids) < 1000:
        pid = os.fork()
        if pid == 0:
            # A small process: under gVisor a forked Python's memory counts
            # whole, and 64 of them would meet the memory limit first.
            os.execv("/bin/sleep", ["sleep", "600"])
        kids.append(pid)
    print("unlimited", len(kids))
except OSError as e:
    print("stopped", len(kids), errno.errorcode[e.errno])
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
`})
	var n int
	var why string
	if _, err := fmt.Sscanf(r.Stdout, "stopped %d %s", &n, &why); err != nil || why != "EAGAIN" || n < 32 || n >= 64+16 {
		t.Fatalf("want fork to fail with EAGAIN below the limit of 64 (+16) processes; got %q", r.Stdout)
	}
	e.assertClean()
}

func TestAttackMemoryBomb(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.exec(map[string]any{"lang": "py", "code": "x = []\nwhile True:\n    x.append(bytearray(16 << 20))"})
	if r.Status != "memory" || r.ExitCode == 0 || r.Stderr != memoryNote {
		t.Fatalf("memory bomb: status %q exit %d stderr %q", r.Status, r.ExitCode, r.Stderr)
	}
	if r.MemoryPeakBytes < 200<<20 || r.MemoryPeakBytes > 300<<20 {
		t.Errorf("memory peak %d outside the 256 MiB limit's neighbourhood", r.MemoryPeakBytes)
	}
	e.assertClean()
}

func TestAttackCPUSpin(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t, func(l *engine.Limits, _ *auth.Config) { l.CPUTime = 2 * time.Second })
	start := time.Now()
	r := e.exec(map[string]any{"lang": "py", "code": "while True: pass"})
	if r.Status != "timeout" || r.Stderr != timeoutNote || time.Since(start) > 8*time.Second {
		t.Fatalf("cpu spin: %+v after %v", r, time.Since(start))
	}
	if r.CPUTimeMS < 1500 {
		t.Errorf("cpu time %d ms: killed before its CPU limit?", r.CPUTimeMS)
	}
	e.assertClean()
}

func TestAttackDaemon(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.ok(map[string]any{"lang": "bash", "code": "setsid nohup sleep 1000 >/dev/null 2>&1 < /dev/null & disown; (trap '' HUP TERM; sleep 1000) & echo started"})
	if r.Stdout != "started\n" {
		t.Fatalf("%+v", r)
	}
	e.assertClean()
}

func TestAttackLoopbackToServer(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	port := e.srv.Listener.Addr().(interface{ String() string }).String()
	_, p, _ := strings.Cut(port, ":")
	code := fmt.Sprintf(`import socket
for fam, addr in ((socket.AF_INET, ("127.0.0.1", %s)), (socket.AF_INET6, ("::1", %s))):
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(addr)
        print("CONNECTED")
    except OSError as e:
        print("blocked", e.errno)
`, p, p)
	r := e.ok(map[string]any{"lang": "py", "code": code})
	if strings.Contains(r.Stdout, "CONNECTED") || strings.Count(r.Stdout, "blocked") != 2 {
		t.Fatalf("loopback: %+v", r)
	}
	r = e.exec(map[string]any{"lang": "bash", "code": "curl -sS -m 2 http://127.0.0.1:" + p + "/health || echo nocurl; cat < /dev/tcp/127.0.0.1/" + p + " && echo OPEN"})
	if strings.Contains(r.Stdout, `"status"`) || strings.Contains(r.Stdout, "OPEN") {
		t.Fatalf("reached the server: %+v", r)
	}
	e.assertClean()
}

func TestAttackEnvironmentSecrets(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	secret := "sk-server-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Setenv("CODEEXEC_API_KEY", secret)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	e := newEnv(t)
	// The pattern goes through a file: on grep's command line it would
	// find itself in /proc/self/cmdline.
	r := e.ok(map[string]any{"lang": "bash", "code": "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; echo '" + secret + "' > /tmp/pat; grep -ra -f /tmp/pat /proc/*/environ /proc/[0-9]*/cmdline 2>/dev/null; echo done"})
	if strings.Contains(r.Stdout, secret) || strings.Contains(r.Stdout, "AWS_") || strings.Contains(r.Stdout, "CODEEXEC") || !strings.HasSuffix(r.Stdout, "done\n") {
		t.Fatalf("environment leaked: %q", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "HOME=/tmp") {
		t.Fatalf("fixed environment missing: %q", r.Stdout)
	}
	e.assertClean()
}

func TestAttackHostFiles(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(e.storDir, "marker-in-storage"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	code := strings.Join([]string{
		"for p in /etc/shadow /root /home /sys/kernel /run " + e.storDir + " " + e.runDir + " " + wd + " /tmp/" + filepath.Base(e.storDir) + "; do",
		"  if [ -e \"$p\" ]; then echo \"VISIBLE $p\"; fi",
		"done",
		// /usr (the host's, read-only) is left out: walking it through
		// gVisor's gofer takes more than the CPU limit.
		"find / -path /usr -prune -o -name marker-in-storage -print 2>/dev/null | sed 's/^/FOUND /'",
		"for f in /tmp/* /tmp/.[!.]*; do [ -e \"$f\" ] && echo \"TMP ${f#/tmp/}\"; done",
		"echo done",
	}, "\n")
	r := e.ok(map[string]any{"lang": "bash", "code": code})
	if strings.Contains(r.Stdout, "VISIBLE") || strings.Contains(r.Stdout, "FOUND") || !strings.HasSuffix(r.Stdout, "done\n") {
		t.Fatalf("host files visible: %s", r.Stdout)
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(line, "TMP ") && line != "TMP code" && line != "TMP build" {
			t.Fatalf("host /tmp visible: %s", r.Stdout)
		}
	}
	e.assertClean()
}

func TestAttackPrivilegedSyscalls(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	code := `import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    r = getattr(libc, name)(*args)
    print(name, hex(args[0]) if args and isinstance(args[0], int) else "", "ok" if r == 0 else "denied", errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
call("unshare", 0x10000000)            # CLONE_NEWUSER
call("unshare", 0x00020000)            # CLONE_NEWNS
call("unshare", 0x40000000)            # CLONE_NEWNET
call("ptrace", 16, os.getppid(), None, None)  # PTRACE_ATTACH
call("setuid", 0)
call("chroot", b"/tmp")
print("uid", os.getuid(), "euid", os.geteuid())
print(open("/proc/self/status").read().split("CapEff:")[1].split()[0])
`
	r := e.ok(map[string]any{"lang": "py", "code": code})
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if strings.Contains(l, " ok ") {
			t.Fatalf("privileged call allowed: %s\n%s", l, r.Stdout)
		}
	}
	if !strings.Contains(r.Stdout, "uid 1000 euid 1000") || !strings.HasSuffix(strings.TrimSpace(r.Stdout), "0000000000000000") {
		t.Fatalf("privileges: %s %s", r.Stdout, r.Stderr)
	}
	r = e.exec(map[string]any{"lang": "bash", "code": "unshare -r true && echo UNSHARED; mount -t tmpfs x /tmp && echo MOUNTED; echo done"})
	if strings.Contains(r.Stdout, "UNSHARED") || strings.Contains(r.Stdout, "MOUNTED") || r.Stdout != "done\n" {
		t.Fatalf("%+v", r)
	}
	e.assertClean()
}

func TestAttackReadOnlyRoot(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.ok(map[string]any{"lang": "bash", "code": "for p in /usr/x /etc/x /x /bin/x /lib/x /proc/sys/kernel/hostname /dev/x; do (echo x > $p) 2>/dev/null && echo \"WROTE $p\"; done; echo ok > /tmp/t && echo ok > /mnt/data/t.txt && echo writable"})
	if strings.Contains(r.Stdout, "WROTE") || r.Stdout != "writable\n" {
		t.Fatalf("%+v", r)
	}
	e.assertClean()
}

func TestAttackFillDisk(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t) // 64 MiB for /mnt/data and for /tmp
	// Two files, so that the file-size rlimit (64 MiB too) is not what stops them.
	r := e.ok(map[string]any{"lang": "bash", "code": "dd if=/dev/zero of=/mnt/data/a.bin bs=1M count=40 2>/dev/null; dd if=/dev/zero of=/mnt/data/big.bin bs=1M count=200 2>&1 | grep -c 'No space left'; dd if=/dev/zero of=/tmp/a bs=1M count=40 2>/dev/null; dd if=/dev/zero of=/tmp/big bs=1M count=200 2>&1 | grep -c 'No space left'; rm /mnt/data/a.bin; wc -c < /mnt/data/big.bin"})
	if !strings.HasPrefix(r.Stdout, "1\n1\n") {
		t.Fatalf("disk not capped: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if n, _ := strconv.ParseInt(lines[len(lines)-1], 10, 64); n > 24<<20 || n == 0 {
		t.Fatalf("file of %d bytes in a 64 MiB working directory", n)
	}
	// The oversized output is refused by the collector too (8 MiB cap here).
	if len(r.Files) != 0 || r.ArtifactTruncation == nil || r.ArtifactTruncation.Reasons["size"] != 1 {
		t.Fatalf("files %+v truncation %+v", r.Files, r.ArtifactTruncation)
	}
	e.assertClean()
}

func TestAttackStdoutFlood(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t) // 1 MiB output cap
	// TotalAlloc counts every byte allocated meanwhile, freed or not: a
	// server that buffered the 300 MB before capping it shows, even once
	// the garbage collector has run.
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	resp := e.post("/exec", map[string]any{"lang": "bash", "code": "head -c 300000000 /dev/zero | tr '\\0' 'A'"})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	var r execResult
	if resp.StatusCode != 200 || len(b) > 3<<20 || json.Unmarshal(b, &r) != nil {
		t.Fatalf("flood: %d, %d bytes, %s", resp.StatusCode, len(b), b[len(b)-min(len(b), 300):])
	}
	if r.Status != "output_limit" || r.Stderr != outputNote || len(r.Stdout) != 1<<20 || strings.Trim(r.Stdout, "A") != "" {
		t.Fatalf("flood: status %q stderr %q, %d bytes of stdout", r.Status, r.Stderr, len(r.Stdout))
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("the test process allocated %d MiB for a 1 MiB answer", grew>>20)
	}
	if time.Since(start) > 15*time.Second {
		t.Fatalf("flood took %v", time.Since(start))
	}
	e.assertClean()
}

func TestAttackSymlinksInWorkdir(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	r := e.ok(map[string]any{"lang": "bash", "code": "ln -s /etc/passwd passwd.txt; ln -s / root.lnk; ln -s " + e.storDir + " storage; mkdir d; ln -s /etc d/etc; mkfifo fifo.txt; echo real > real.txt; echo ok"})
	if r.Stdout != "ok\n" || len(r.Files) != 1 || r.Files[0].Name != "real.txt" {
		t.Fatalf("collected: %+v (stderr %q)", r.Files, r.Stderr)
	}
	e.assertClean()
}

func TestAttackTraversalInDownloadPaths(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	for _, p := range []string{"/download/..%2f..%2fetc/passwd", "/download/%2e%2e/%2e%2e", "/download/x/..%2f..%2f..%2fetc%2fpasswd",
		"/files/..%2f..", "/sessions/..%2f/objects/x", "/download/a.b/c.d"} {
		resp := e.do("GET", p, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 || resp.StatusCode == 200 && !bytes.Equal(bytes.TrimSpace(b), []byte("[]")) || bytes.Contains(b, []byte("root:")) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, b)
		}
	}
}

func TestAttackKillAll(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	// kill(-1) reaches every process the code may signal but itself and
	// the sandbox's init: the sleep dies, the shell carries on.
	// Whether bash reports the killed job depends on when it reaps it.
	r := e.exec(map[string]any{"lang": "bash", "code": "sleep 100 & echo before; kill -9 -1; echo after"})
	if r.Status != "ok" || r.ExitCode != 0 || r.Stdout != "before\nafter\n" || r.Stderr != "" && !killedJob.MatchString(r.Stderr) {
		t.Fatalf("status %q exit %d stdout %q stderr %q", r.Status, r.ExitCode, r.Stdout, r.Stderr)
	}
	e.assertClean()
}

var killedJob = regexp.MustCompile(`^/tmp/code/main\.sh: line \d+: +\d+ Killed +sleep 100\n$`)

func TestAttackMalformedRequests(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	huge := `{"lang":"py","code":"` + strings.Repeat("x", 51<<20) + `"}`
	cases := []struct {
		name, body string
		status     int
		error      string // the start of the answer's error
	}{
		{"oversized", huge, 413, "request body larger than 52428800 bytes"},
		{"nested", strings.Repeat("[", 100000) + strings.Repeat("]", 100000), 400, "invalid JSON body: "},
		{"wrong types", `{"lang":42,"code":["x"]}`, 400, "invalid JSON body: "},
		{"null files", `{"lang":"py","code":"print(1)","files":[null]}`, 400, `invalid request: file name "": empty`},
		{"files object", `{"lang":"py","code":"print(1)","files":{"a":1}}`, 400, "invalid JSON body: "},
		{"neg timeout", `{"lang":"py","code":"print(1)","timeout":-5}`, 400, "timeout must be a non-negative number of milliseconds"},
		{"nul in args", `{"lang":"py","code":"print(1)","args":["a\u0000b"]}`, 400, "args: NUL bytes are not allowed"},
		{"empty", ``, 400, "invalid JSON body: EOF"},
		{"many refs", `{"lang":"py","code":"1","files":[` + strings.Repeat(`{"id":"a","session_id":"b","name":"c"},`, 100) + `{"id":"a","session_id":"b","name":"c"}]}`, 400, "invalid request: 101 files referenced, at most 64 allowed"},
		{"nul in name", `{"lang":"py","code":"1","files":[{"id":"a","session_id":"b","name":"a\u0000b"}]}`, 400, `invalid request: file name "a\x00b": control characters and backslashes are not allowed`},
		{"lang injected", `{"lang":"py; rm -rf /","code":"1"}`, 400, "Unsupported language: py; rm -rf /"},
	}
	for _, c := range cases {
		got := decode[map[string]string](t, e.post("/exec", c.body), c.status)
		if !strings.HasPrefix(got["error"], c.error) {
			t.Errorf("%s: error %q, want it to start with %q", c.name, got["error"], c.error)
		}
	}
	// Accepted oddities run as code, exactly.
	r := e.ok(`{"lang":"py","code":"print(1)","timeout":1e300}`)
	if r.Stdout != "1\n" {
		t.Errorf("big timeout: %q", r.Stdout)
	}
	r = e.exec("{\"lang\":\"py\",\"code\":\"print(1)\xff\xfe\"}")
	if r.Status != "error" || r.ExitCode != 1 || !strings.HasSuffix(r.Stderr, "SyntaxError: invalid character '\ufffd' (U+FFFD)\n") {
		t.Errorf("invalid utf8: status %q exit %d stderr %q", r.Status, r.ExitCode, r.Stderr)
	}
	for _, ct := range []string{"multipart/form-data; boundary=x", "multipart/form-data", "text/plain"} {
		resp := e.do("POST", "/upload", strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\ntrunc"), "Content-Type", ct)
		got := decode[map[string]string](t, resp, 400)
		if got["error"] == "" {
			t.Errorf("upload %q: no error", ct)
		}
	}
	e.assertClean()
}

func TestAttackBurst(t *testing.T) {
	if !onBackends(t, allBackends...) {
		return
	}
	e := newEnv(t)
	var wg sync.WaitGroup
	errs := make(chan string, 24)
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp := e.post("/exec", map[string]any{"lang": "py", "code": fmt.Sprintf("open('n.txt','w').write('%d'); print(%d*2)", i, i)})
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte(fmt.Sprintf(`"stdout":"%d\n"`, i*2))) {
				errs <- fmt.Sprintf("%d: %d %s", i, resp.StatusCode, b)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	e.assertClean()
}

var _ = http.StatusOK
