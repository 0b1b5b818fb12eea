//go:build !linux

package sandbox

import "context"

// WaitWarm does nothing where there is no Linux backend.
func (*Linux) WaitWarm(context.Context) error { return nil }

// WarmCompiler reports that there is no warm pool here.
func WarmCompiler() (string, error) { return "", errNoWarm }

var errNoWarm = errorString("no warm pool on this platform")

type errorString string

func (e errorString) Error() string { return string(e) }
