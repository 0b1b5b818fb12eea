//go:build !linux

package sandbox

import "context"

// WaitWarm does nothing where there is no Linux backend.
func (*Linux) WaitWarm(context.Context) error { return nil }
