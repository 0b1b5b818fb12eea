//go:build !linux

package warm

import (
	"context"
	"errors"

	"github.com/codeexec/codeexec/internal/sandbox"
)

var errNotLinux = errors.New("sandbox: the warm pool needs Linux")

// Pool is the warm pool; elsewhere it cannot be created.
type Pool struct{}

// New fails on non-Linux systems.
func New(sandbox.Sandbox, Config) (*Pool, error) { return nil, errNotLinux }

// Compiler reports that there is no warm pool here.
func Compiler() (string, error) { return "", errNotLinux }

func (*Pool) NewWorkdir(int64) (string, func() error, error) { return "", nil, errNotLinux }
func (*Pool) Run(context.Context, sandbox.Spec) (sandbox.Result, error) {
	return sandbox.Result{}, errNotLinux
}
func (*Pool) Describe() sandbox.Isolation    { return sandbox.Isolation{Backend: "none"} }
func (*Pool) Close() error                   { return nil }
func (*Pool) Served() int64                  { return 0 }
func (*Pool) WaitWarm(context.Context) error { return nil }
