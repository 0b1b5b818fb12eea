//go:build !linux

package sandbox

import "context"

// GVisor is the gVisor backend; elsewhere it cannot be created.
type GVisor struct{}

// NewGVisor fails on non-Linux systems.
func NewGVisor(GVisorConfig) (*GVisor, error) { return nil, errNotLinux }

func (*GVisor) NewWorkdir(int64) (string, func() error, error) { return "", nil, errNotLinux }
func (*GVisor) Run(context.Context, Spec) (Result, error)      { return Result{}, errNotLinux }
func (*GVisor) Describe() Isolation                            { return Isolation{Backend: "none"} }
func (*GVisor) Close() error                                   { return nil }
