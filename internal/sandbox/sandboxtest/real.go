package sandboxtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
)

// What follows serves the root tests of the real backends (native, warm,
// gVisor), which run specs in real sandboxes the same way.

// Secret is in the environment of a backend's test process (Main): no
// sandbox may see it.
const Secret = "CODEEXEC_TEST_SECRET=hunter2-do-not-leak"

// RunDir is the run directory prefix of this test process's backends.
var RunDir = fmt.Sprintf("/run/codeexec-test-%d", os.Getpid())

// Main runs the root tests of a backend package: maybeInit first (its
// sandboxes re-execute the test binary as their init: nsinit.MaybeInit),
// Secret in the environment, the tests, then closers (the package's shared
// backends), then every directory named RunDir* removed. It exits with the
// tests' code, or 1 when a closer fails.
func Main(m *testing.M, maybeInit func(), closers ...func() error) {
	maybeInit()
	k, v, _ := strings.Cut(Secret, "=")
	os.Setenv(k, v)
	code := m.Run()
	for _, c := range closers {
		if err := c(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			code = 1
		}
	}
	// Also the -warm, -nocc, ... variants some tests use.
	dirs, _ := filepath.Glob(RunDir + "*")
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// RunOut is a run's result with its output and working directory.
type RunOut struct {
	sandbox.Result
	Stdout, Stderr string
	Workdir        string
}

// BaseEnv is the environment of a spec that gives none.
var BaseEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// RunSpec executes spec on s (Workdir, Env and a 20 s wall time filled in
// when unset) and fails the test on a sandbox error.
func RunSpec(t *testing.T, s sandbox.Sandbox, spec sandbox.Spec) RunOut {
	t.Helper()
	ro, err := TryRunSpec(t, context.Background(), s, spec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return ro
}

// TryRunSpec is RunSpec that returns the sandbox's error. A workdir it
// makes is released at the test's cleanup; held, when set, is told of it
// while it exists.
func TryRunSpec(t *testing.T, ctx context.Context, s sandbox.Sandbox, spec sandbox.Spec) (RunOut, error) {
	t.Helper()
	if spec.Workdir == "" {
		dir, release, err := s.NewWorkdir(16 << 20)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := release(); err != nil {
				t.Error(err)
			}
		})
		spec.Workdir = dir
	}
	if spec.Env == nil {
		spec.Env = BaseEnv
	}
	if spec.Limits.WallTime == 0 {
		spec.Limits.WallTime = 20 * time.Second
	}
	var out, errb bytes.Buffer
	spec.Stdout, spec.Stderr = &out, &errb
	res, err := s.Run(ctx, spec)
	return RunOut{Result: res, Stdout: out.String(), Stderr: errb.String(), Workdir: spec.Workdir}, err
}

// Sh is one step running script under bash.
func Sh(script string) []sandbox.Step {
	return []sandbox.Step{{Name: "run", Argv: []string{"/bin/bash", "-c", script}}}
}

// Py is one step running code under an isolated python3.
func Py(code string) []sandbox.Step {
	return []sandbox.Step{{Name: "run", Argv: []string{"/usr/bin/python3", "-I", "-S", "-c", code}}}
}

// WantStatus fails the test unless r ended with want.
func WantStatus(t *testing.T, r RunOut, want sandbox.Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %q, want %q (exit %d %s)\nstdout: %.2000s\nstderr: %.2000s", r.Status, want, r.ExitCode, r.Signal, r.Stdout, r.Stderr)
	}
}

// Reclaim opens a backend with open until it holds instance k, as a
// crashed server's successor would: a successor takes the lowest free K,
// and another test process on the host may have freed a lower one since.
// The backends holding those lower ones stay open until the test ends.
func Reclaim[T interface{ Close() error }](t *testing.T, k int, open func() (T, int, error)) T {
	t.Helper()
	for range 16 {
		b, got, err := open()
		if err != nil {
			t.Fatal(err)
		}
		if got == k {
			return b
		}
		t.Cleanup(func() { b.Close() })
		if got > k {
			t.Fatalf("successor got K=%d, want %d: another process took %d", got, k, k)
		}
	}
	t.Fatalf("never got K=%d back", k)
	panic("unreachable")
}

// RecordingNet is a NetAttacher that notes the namespace it was given.
type RecordingNet struct{ NS string }

func (n *RecordingNet) Attach(nsPath string) error {
	link, err := os.Readlink(nsPath)
	n.NS = link
	return err
}

func (n *RecordingNet) Nameserver() string { return "192.0.2.53" }

// CountingWriter counts what is written to it and keeps none of it.
type CountingWriter struct{ N int64 }

func (w *CountingWriter) Write(p []byte) (int, error) { w.N += int64(len(p)); return len(p), nil }

// WaitForGo waits for /mnt/data/go (or to be killed), then says done.
const WaitForGo = "while [ ! -e /mnt/data/go ]; do sleep 0.02; done; echo done"

// SpinScript leaves a CPU loop that shrugs off SIGXCPU and SIGTERM behind,
// says so, and waits for /mnt/data/go (or to be killed): what a freezer
// must stop.
const SpinScript = "( trap '' XCPU TERM; while :; do :; done ) & echo started; " + WaitForGo

// LineWriter collects a run's output and signals its first full line on
// First.
type LineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	First chan string
}

// NewLineWriter returns an empty LineWriter.
func NewLineWriter() *LineWriter { return &LineWriter{First: make(chan string, 1)} }

func (w *LineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := bytes.IndexByte(w.buf.Bytes(), '\n') >= 0
	w.buf.Write(b)
	if i := bytes.IndexByte(w.buf.Bytes(), '\n'); !had && i >= 0 {
		w.First <- w.buf.String()[:i]
	}
	return len(b), nil
}

// String is everything written so far.
func (w *LineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// CheckFreezer is the freezer contract every backend keeps, tried on box
// with a CPU loop that ignores SIGXCPU and SIGTERM (SpinScript): frozen
// through Spec.Started, the run uses at most idle of CPU in a second (as
// usage, given the freezer, measures it from the host); thawed, the loop
// runs again; killed while frozen, the run ends at once as killed; then
// the freezer answers ErrRunEnded.
func CheckFreezer(t *testing.T, box sandbox.Sandbox, idle time.Duration, usage func(sandbox.Freezer) time.Duration) {
	t.Helper()
	fzc := make(chan sandbox.Freezer, 1)
	spec := sandbox.Spec{Steps: Sh(SpinScript), Started: func(f sandbox.Freezer) { fzc <- f }, Env: BaseEnv}
	spec.Limits = sandbox.Limits{WallTime: time.Minute, CPUTime: time.Minute, MemoryBytes: 256 << 20, Pids: 64}
	dir, release, err := box.NewWorkdir(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	spec.Workdir = dir
	out := NewLineWriter()
	spec.Stdout, spec.Stderr = out, out
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ran struct {
		res sandbox.Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := box.Run(ctx, spec)
		done <- ran{res, err}
	}()
	var fz sandbox.Freezer
	select {
	case fz = <-fzc:
	case r := <-done:
		t.Fatalf("run ended without calling Started: %+v %v %q", r.res, r.err, out.String())
	}
	if line := <-out.First; line != "started" {
		t.Fatalf("first line %q", line)
	}
	if err := fz.Freeze(); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	// Measured over a second: a frozen run's tasks do not run.
	u0 := usage(fz)
	time.Sleep(time.Second)
	if d := usage(fz) - u0; d > idle {
		t.Fatalf("frozen run used %v of CPU in 1 s", d)
	}
	if err := fz.Thaw(); err != nil {
		t.Fatalf("thaw: %v", err)
	}
	u1 := usage(fz)
	deadline := time.Now().Add(10 * time.Second)
	for usage(fz)-u1 < 200*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("thawed loop used only %v of CPU in 10 s", usage(fz)-u1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := fz.Freeze(); err != nil {
		t.Fatalf("freeze again: %v", err)
	}
	start := time.Now()
	cancel()
	var r ran
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a run killed while frozen did not end within 20 s")
	}
	if r.err != nil || r.res.Status != sandbox.StatusKilled {
		t.Fatalf("killed while frozen: %+v %v", r.res, r.err)
	}
	t.Logf("killed while frozen, ended in %v", time.Since(start))
	if err := fz.Freeze(); err != sandbox.ErrRunEnded {
		t.Fatalf("freeze after the end: %v, want ErrRunEnded", err)
	}
}

// ForkLoop is Python that forks sleeping children until fork fails, then
// prints how many it made and the error.
const ForkLoop = `
import os, errno, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError as e:
    print(n, errno.errorcode[e.errno])
`
