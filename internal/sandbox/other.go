//go:build !linux

package sandbox

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("sandbox: the Linux backend needs Linux")

// Linux is the Linux namespace backend; elsewhere it cannot be created.
type Linux struct{}

// NewLinux fails on non-Linux systems.
func NewLinux(LinuxConfig) (*Linux, error) { return nil, errNotLinux }

// MaybeInit does nothing on non-Linux systems.
func MaybeInit() {}

func (*Linux) NewWorkdir(int64) (string, func() error, error) { return "", nil, errNotLinux }
func (*Linux) Run(context.Context, Spec) (Result, error)      { return Result{}, errNotLinux }
func (*Linux) Describe() Isolation                            { return Isolation{Backend: "none"} }
func (*Linux) Close() error                                   { return nil }
