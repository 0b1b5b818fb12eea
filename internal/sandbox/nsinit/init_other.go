//go:build !linux

package nsinit

// MaybeInit does nothing on non-Linux systems.
func MaybeInit() {}
