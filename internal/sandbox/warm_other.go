//go:build !linux

package sandbox

import (
	"context"
	"errors"
)

// WaitWarm does nothing where there is no Linux backend.
func (*Linux) WaitWarm(context.Context) error { return nil }

// WarmCompiler reports that there is no warm pool here.
func WarmCompiler() (string, error) { return "", errors.New("no warm pool on this platform") }

// WarmServed is 0 where there is no warm pool.
func (*Linux) WarmServed() int64 { return 0 }
