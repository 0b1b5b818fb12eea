//go:build !linux

package native

import (
	"context"
	"errors"

	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/sandbox/host"
)

var errNotLinux = errors.New("sandbox: the Linux backend needs Linux")

// Linux is the Linux namespace backend; elsewhere it cannot be created.
type Linux struct{}

// New fails on non-Linux systems.
func New(host.Config) (*Linux, error) { return nil, errNotLinux }

func (*Linux) NewWorkdir(int64) (string, func() error, error) { return "", nil, errNotLinux }
func (*Linux) Run(context.Context, sandbox.Spec) (sandbox.Result, error) {
	return sandbox.Result{}, errNotLinux
}
func (*Linux) Describe() sandbox.Isolation { return sandbox.Isolation{Backend: "none"} }
func (*Linux) Close() error                { return nil }
