//go:build linux

package warm

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
	"github.com/codeexec/codeexec/internal/sandbox/native"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
	"github.com/codeexec/codeexec/internal/testenv"
)

var (
	cold     *Pool
	coldErr  error
	coldOnce sync.Once
)

func TestMain(m *testing.M) {
	sandboxtest.Main(m, nsinit.MaybeInit, func() error {
		var errs []error
		for _, b := range []*Pool{cold, warmBox} {
			if b != nil {
				errs = append(errs, b.Close())
			}
		}
		return errors.Join(errs...)
	})
}

// newPool starts a native backend with hc wrapped in a pool with wc (no
// templates when wc.Python is 0: every run cold).
func newPool(hc host.Config, wc Config) (*Pool, error) {
	hc.Etc = lang.Etc() // as main gives it
	base, err := native.New(hc)
	if err != nil {
		return nil, err
	}
	p, err := New(base, wc)
	if err != nil {
		base.Close()
		return nil, err
	}
	return p, nil
}

// sb returns the package-wide pool without templates: every run cold, for
// the tests that compare the two paths.
func sb(t *testing.T) *Pool {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root")
	}
	coldOnce.Do(func() {
		cold, coldErr = newPool(host.Config{RunDir: testRunDir, Slots: 4}, Config{})
	})
	if coldErr != nil {
		t.Fatal(coldErr)
	}
	return cold
}

type runOut = sandboxtest.RunOut

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
