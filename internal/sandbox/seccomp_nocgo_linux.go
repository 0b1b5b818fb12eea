//go:build linux && !cgo

package sandbox

import "errors"

// Without cgo there is no libseccomp; NewLinux refuses to start rather than
// run code unfiltered.
const seccompAvailable = false

func loadSeccomp(bool) error { return errors.New("sandbox: built without cgo: no seccomp") }
