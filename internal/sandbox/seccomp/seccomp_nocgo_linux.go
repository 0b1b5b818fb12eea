//go:build linux && !cgo

package seccomp

import "errors"

// Without cgo there is no libseccomp; the native backend refuses to start rather than
// run code unfiltered.
const Available = false

func Load(bool) error { return errors.New("sandbox: built without cgo: no seccomp") }
