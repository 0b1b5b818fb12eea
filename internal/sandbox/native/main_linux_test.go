//go:build linux

package native

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/testenv"
)

var (
	shared     *Linux
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	sandboxtest.Main(m, nsinit.MaybeInit, func() error {
		if shared == nil {
			return nil
		}
		return shared.Close()
	})
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

// testRunDir is where this package's backends keep their run directories.
var testRunDir = sandboxtest.RunDir
