//go:build linux

package gvisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
)

// testSecret is put in the test process's environment; no sandbox may see it.
const testSecret = "CODEEXEC_TEST_SECRET=hunter2-do-not-leak"

var testRunDir string

func TestMain(m *testing.M) {
	nsinit.MaybeInit()
	k, v, _ := strings.Cut(testSecret, "=")
	os.Setenv(k, v)
	testRunDir = fmt.Sprintf("/run/codeexec-test-%d", os.Getpid())
	code := m.Run()
	dirs, _ := filepath.Glob(testRunDir + "*")
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

type runOut = sandboxtest.RunOut

func sh(script string) []sandbox.Step { return sandboxtest.Sh(script) }

func wantStatus(t *testing.T, r runOut, want sandbox.Status) {
	t.Helper()
	sandboxtest.WantStatus(t, r, want)
}

func py(code string) []sandbox.Step { return sandboxtest.Py(code) }
