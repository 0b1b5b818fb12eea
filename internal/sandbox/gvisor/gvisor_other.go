//go:build !linux

package gvisor

import (
	"context"
	"errors"

	"github.com/codeexec/codeexec/internal/sandbox"
)

// GVisor is the gVisor backend; elsewhere it cannot be created.
type GVisor struct{}

// New fails on non-Linux systems.
func New(Config) (*GVisor, error) { return nil, errNotLinux }

func (*GVisor) NewWorkdir(int64) (string, func() error, error) { return "", nil, errNotLinux }
func (*GVisor) Run(context.Context, sandbox.Spec) (sandbox.Result, error) {
	return sandbox.Result{}, errNotLinux
}
func (*GVisor) Describe() sandbox.Isolation { return sandbox.Isolation{Backend: "none"} }
func (*GVisor) Close() error                { return nil }

var errNotLinux = errors.New("sandbox: the gVisor backend needs Linux")
