//go:build linux

package native

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
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
	nsinit.MaybeInit()
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
		shared, sharedErr = New(host.Config{RunDir: testRunDir, Slots: 4})
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

type runOut = sandboxtest.RunOut

var baseEnv = sandboxtest.BaseEnv

// run executes spec (Workdir and Env filled in when empty) and fails the
// test on a sandbox error.
func run(t *testing.T, s sandbox.Sandbox, spec sandbox.Spec) runOut {
	t.Helper()
	return sandboxtest.RunSpec(t, s, spec)
}

func tryRun(t *testing.T, ctx context.Context, s sandbox.Sandbox, spec sandbox.Spec) (runOut, error) {
	t.Helper()
	return sandboxtest.TryRunSpec(t, ctx, s, spec)
}

func sh(script string) []sandbox.Step { return sandboxtest.Sh(script) }

func py(code string) []sandbox.Step { return sandboxtest.Py(code) }

func wantStatus(t *testing.T, r runOut, want sandbox.Status) {
	t.Helper()
	sandboxtest.WantStatus(t, r, want)
}
