package sandbox

import "runtime"

// The main goroutine keeps the main thread to itself. Backends and the
// egress layer move a locked thread into another namespace for a moment
// (gVisor's runsc starts in a private mount namespace; a run's network
// namespace is attached from a thread inside it); such a goroutine ends
// locked, and the runtime then destroys its thread — any thread but the
// main one, which it parks instead. /proc/self is the main thread: had it
// stayed in a private mount namespace, the process would read another
// namespace's mountinfo than the one its threads mount in (seen as a
// predecessor's workdir that could not be removed: "device or resource
// busy", because it was never found to unmount).
func init() { runtime.LockOSThread() }
