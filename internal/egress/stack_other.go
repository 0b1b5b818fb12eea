//go:build !linux

package egress

import "errors"

// Attach is Linux only.
func (r *Run) Attach(string) error { return errors.New("network: per-run networks need Linux") }
