// Package vm runs the cgroup-dependent tests on a real cgroup v2 kernel:
// it boots Debian's cloud kernel under qemu (TCG) with a root made of this
// host's own binaries (bash, Python, the C compiler the warm pool needs)
// and the Go test binaries of the packages under test, and turns the
// guest's serial console into a test result.
//
// It must not know what the guest tests check: it only builds the guest,
// boots it, streams its console and reads the final marker.
package vm
