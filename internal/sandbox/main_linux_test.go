//go:build linux

package sandbox

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

	"github.com/codeexec/codeexec/internal/testenv"
)

// testSecret is put in the test process's environment; no sandbox may see it.
const testSecret = "CODEEXEC_TEST_SECRET=hunter2-do-not-leak"

var (
	shared     *Linux
	sharedErr  error
	sharedOnce sync.Once
	testRunDir string
)

func TestMain(m *testing.M) {
	MaybeInit()
	k, v, _ := strings.Cut(testSecret, "=")
	os.Setenv(k, v)
	testRunDir = fmt.Sprintf("/run/codeexec-test-%d", os.Getpid())
	code := m.Run()
	if shared != nil {
		if err := shared.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			code = 1
		}
	}
	// Also the -warm, -nocc, ... variants some tests use.
	dirs, _ := filepath.Glob(testRunDir + "*")
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// sb returns the package-wide sandbox, skipping when the machine cannot
// run it (not root).
func sb(t *testing.T) *Linux {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root")
	}
	sharedOnce.Do(func() {
		shared, sharedErr = NewLinux(LinuxConfig{RunDir: testRunDir, Slots: 4})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

type runOut struct {
	Result
	Stdout, Stderr string
	Workdir        string
}

var baseEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// run executes spec (Workdir and Env filled in when empty) and fails the
// test on a sandbox error.
func run(t *testing.T, s *Linux, spec Spec) runOut {
	t.Helper()
	ro, err := tryRun(t, context.Background(), s, spec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return ro
}

func tryRun(t *testing.T, ctx context.Context, s *Linux, spec Spec) (runOut, error) {
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
		spec.Env = baseEnv
	}
	if spec.Limits.WallTime == 0 {
		spec.Limits.WallTime = 20 * time.Second
	}
	var out, errb bytes.Buffer
	spec.Stdout, spec.Stderr = &out, &errb
	res, err := s.Run(ctx, spec)
	return runOut{Result: res, Stdout: out.String(), Stderr: errb.String(), Workdir: spec.Workdir}, err
}

func sh(script string) []Step {
	return []Step{{Name: "run", Argv: []string{"/bin/bash", "-c", script}}}
}

func py(code string) []Step {
	return []Step{{Name: "run", Argv: []string{"/usr/bin/python3", "-I", "-S", "-c", code}}}
}

func wantStatus(t *testing.T, r runOut, want Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %q, want %q (exit %d %s)\nstdout: %.2000s\nstderr: %.2000s", r.Status, want, r.ExitCode, r.Signal, r.Stdout, r.Stderr)
	}
}

// reclaim opens a backend with open until it holds instance k, as a
// crashed server's successor would: a successor takes the lowest free K,
// and another test process on the host may have freed a lower one since.
// The backends holding those lower ones stay open until the test ends.
func reclaim[T interface{ Close() error }](t *testing.T, k int, open func() (T, int, error)) T {
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
