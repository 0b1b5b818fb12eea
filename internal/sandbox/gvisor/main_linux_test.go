//go:build linux

package gvisor

import (
	"testing"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/nsinit"
	"github.com/codeexec/codeexec/internal/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	sandboxtest.Main(m, nsinit.MaybeInit)
}

type runOut = sandboxtest.RunOut

func sh(script string) []sandbox.Step { return sandboxtest.Sh(script) }

func wantStatus(t *testing.T, r runOut, want sandbox.Status) {
	t.Helper()
	sandboxtest.WantStatus(t, r, want)
}

func py(code string) []sandbox.Step { return sandboxtest.Py(code) }

// testRunDir is where this package's backends keep their run directories.
var testRunDir = sandboxtest.RunDir
