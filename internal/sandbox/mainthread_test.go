package sandbox

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// No goroutine but main ever runs on the main thread (mainthread.go): a
// goroutine that locks its thread, as the namespace-changing ones do, gets
// another thread.
func TestUnitMainThreadReserved(t *testing.T) {
	pid := os.Getpid()
	var onMain atomic.Int32
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if syscall.Gettid() == pid {
				onMain.Add(1)
			}
			runtime.Gosched()
		}()
	}
	wg.Wait()
	if n := onMain.Load(); n > 0 {
		t.Fatalf("%d of 200 locked goroutines ran on the main thread", n)
	}
}
