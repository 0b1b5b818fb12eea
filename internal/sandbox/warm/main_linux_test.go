//go:build linux

package warm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// testSecret is put in the test process's environment; no sandbox may see it.
const testSecret = "CODEEXEC_TEST_SECRET=hunter2-do-not-leak"

var (
	cold       *Pool
	coldErr    error
	coldOnce   sync.Once
	testRunDir string
)

func TestMain(m *testing.M) {
	nsinit.MaybeInit()
	k, v, _ := strings.Cut(testSecret, "=")
	os.Setenv(k, v)
	testRunDir = fmt.Sprintf("/run/codeexec-test-%d", os.Getpid())
	code := m.Run()
	for _, b := range []*Pool{cold, warmBox} {
		if b != nil {
			if err := b.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "close:", err)
				code = 1
			}
		}
	}
	// Also the -warm, -nocc, ... variants some tests use.
	dirs, _ := filepath.Glob(testRunDir + "*")
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
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
