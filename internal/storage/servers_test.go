package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The cloud backends' tests run against real servers built by
// scripts/install-test-servers.sh into .cache/bin. The tests run the script
// themselves (once per test binary; it returns at once when the pinned
// versions are built). CODEEXEC_SKIP_CLOUD_TESTS=1 skips them, except on CI
// (CI=true), where they must run.

var (
	installOnce sync.Once
	installErr  error
	installLog  []byte
)

// repoRoot is the repository's top directory (tests run in the package's).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// serverBin returns the path of a test server's binary, installing the test
// servers first if needed.
func serverBin(t *testing.T, name string) string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Getenv("CODEEXEC_SKIP_CLOUD_TESTS") == "1" && !ci {
		t.Skipf("CODEEXEC_SKIP_CLOUD_TESTS=1: not running the tests against %s", name)
	}
	root := repoRoot(t)
	installOnce.Do(func() {
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "install-test-servers.sh"))
		cmd.Dir = root
		installLog, installErr = cmd.CombinedOutput()
	})
	if installErr != nil {
		t.Fatalf("scripts/install-test-servers.sh: %v\n%s\n(set CODEEXEC_SKIP_CLOUD_TESTS=1 to skip the cloud storage tests)", installErr, installLog)
	}
	bin := os.Getenv("CODEEXEC_TEST_BIN")
	if bin == "" {
		bin = filepath.Join(root, ".cache", "bin")
	}
	return filepath.Join(bin, name)
}

// freePort returns a TCP port on the loopback interface that was free a
// moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a server's output.
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

// startServer runs a test server listening on 127.0.0.1:port (a fresh one per
// attempt, as a port can be taken between freePort and the server's bind) and
// waits until it accepts connections. The server is stopped when the test
// ends; its output is logged if the test failed.
func startServer(t *testing.T, bin string, args func(port int) []string) (port int) {
	t.Helper()
	var out *syncBuffer
	for attempt := 0; attempt < 3; attempt++ {
		port = freePort(t)
		out = &syncBuffer{}
		cmd := exec.Command(bin, args(port)...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", filepath.Base(bin), err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				goto retry
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Cleanup(func() {
					stop()
					if t.Failed() {
						t.Logf("%s output:\n%s", filepath.Base(bin), out)
					}
				})
				return port
			}
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		t.Fatalf("%s did not listen on %s within 30s; output:\n%s", filepath.Base(bin), addr, out)
	retry:
		t.Logf("%s exited at start (attempt %d); output:\n%s", filepath.Base(bin), attempt+1, out)
	}
	t.Fatalf("%s would not start", filepath.Base(bin))
	return 0
}

// heapObjects reads the bytes of heap objects: right after runtime.GC, the
// live ones.
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// sampledReader produces left pseudo-random bytes and, every MiB, records
// the live heap: the largest is what the consumer held in memory at once.
type sampledReader struct {
	left  int64
	seed  uint64
	peak  uint64
	since int64
}

func (r *sampledReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for i := 0; i < len(p); i += 8 { // xorshift: incompressible, allocation-free
		r.seed ^= r.seed << 13
		r.seed ^= r.seed >> 7
		r.seed ^= r.seed << 17
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.seed)
		copy(p[i:], w[:])
	}
	r.left -= int64(len(p))
	if r.since += int64(len(p)); r.since >= 1<<20 || r.left == 0 {
		r.since = 0
		runtime.GC()
		r.peak = max(r.peak, heapObjects())
	}
	return len(p), nil
}

// checkStreams asserts that Put does not hold a large upload in memory: the
// live heap must not grow by more than limit while 128 MiB go through Put.
// (S3's upload manager holds ~16 MiB + 3 parts of 5 MiB, whatever the size;
// see uploadPartSize.)
func checkStreams(t *testing.T, s Store, limit uint64) {
	t.Helper()
	const size = 128 << 20
	ctx := context.Background()
	key := Key{NewID(), NewID()}
	runtime.GC()
	base := heapObjects()
	r := &sampledReader{left: size, seed: 0x9e3779b97f4a7c15}
	obj, err := s.Put(ctx, key, r, Meta{Name: "big.bin"})
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != size {
		t.Fatalf("stored %d bytes of %d", obj.Size, size)
	}
	growth := int64(r.peak) - int64(base)
	t.Logf("put of %d MiB: heap peak %.1f MiB over a %.1f MiB base (limit %d MiB)",
		size>>20, float64(growth)/(1<<20), float64(base)/(1<<20), limit>>20)
	if growth > int64(limit) {
		t.Errorf("heap grew by %.1f MiB during a %d MiB put: the upload is buffered in memory", float64(growth)/(1<<20), size>>20)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}

// setenv sets environment variables (name, value, ...) for the test's
// duration.
func setenv(t *testing.T, kv ...string) {
	t.Helper()
	if len(kv)%2 != 0 {
		panic(fmt.Sprint("setenv: odd argument count ", len(kv)))
	}
	for i := 0; i < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

// TestLocalStreams holds the local backend to the same memory bound as the
// cloud ones.
func TestLocalStreams(t *testing.T) {
	s, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkStreams(t, s, 56<<20)
}
