package sandbox

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The run supervisor: every backend (native, gVisor) and the warm pool start
// their processes their own way, then hand the run to the same three parts:
//
//   - a watchdog, the only thing that kills a run from outside: at the wall
//     time, at the CPU time of the last step (polled from the run's cgroup:
//     RLIMIT_CPU counts one process, not the run), past the output cap, and
//     on cancellation;
//   - an output sink that copies stdout and stderr under one byte cap and is
//     drained the same way after the run;
//   - classify, the only place that turns how a run ended into a Status.

// cpuPoll is how often the watchdog reads the run's CPU time.
const cpuPoll = 50 * time.Millisecond

// watchdog enforces a run's outside limits until end is called.
type watchdog struct {
	kill  func()                        // ends every process of the run; may be called more than once
	usage func() (time.Duration, error) // the run's CPU time so far
	cpu   time.Duration                 // the last step's CPU allowance

	arm  chan time.Duration // a step's CPU base: start polling against it
	step chan time.Duration // a step's own time limit (0: none)
	stop chan struct{}
	done chan struct{}

	// Set by the watchdog's goroutine; read after end.
	v      verdict
	killed atomic.Bool // it killed the run (readable any time)
}

// verdict is what the watchdog did.
type verdict struct {
	reason    Status // why it killed the run ("": it did not)
	cpuKilled bool   // it killed at the CPU limit
	stepTimed bool   // it killed at a step's own time limit
	cpuBase   time.Duration
	armed     bool          // the last step started, and cpuBase is its start
	cpuLimit  time.Duration // the last step's CPU allowance
}

// watch starts a watchdog over a run whose limits are lim: the wall clock
// starts now.
func watch(ctx context.Context, lim Limits, overflow <-chan struct{}, usage func() (time.Duration, error), kill func()) *watchdog {
	w := &watchdog{kill: kill, usage: usage, cpu: lim.CPUTime,
		arm: make(chan time.Duration, 1), step: make(chan time.Duration, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop(ctx, lim.WallTime, overflow)
	return w
}

// armCPU says the last step starts now: its CPU time counts from here.
func (w *watchdog) armCPU() {
	base, _ := w.usage()
	w.arm <- base
}

// stepLimit bounds the step that starts now by d (0: only the wall time),
// for backends whose init does not time steps itself.
func (w *watchdog) stepLimit(d time.Duration) { w.step <- d }

// hasKilled says whether the watchdog has killed the run so far.
func (w *watchdog) hasKilled() bool { return w.killed.Load() }

// end stops the watchdog and says what it did. Call it once the run's
// processes are gone.
func (w *watchdog) end() verdict {
	close(w.stop)
	<-w.done
	w.v.cpuLimit = w.cpu
	return w.v
}

func (w *watchdog) loop(ctx context.Context, wallTime time.Duration, overflow <-chan struct{}) {
	defer close(w.done)
	wall := time.NewTimer(wallTime)
	defer wall.Stop()
	var stepC <-chan time.Time
	var tick <-chan time.Time
	ctxDone := ctx.Done()
	killFor := func(r Status) {
		if w.v.reason == "" {
			w.v.reason = r
		}
		w.killed.Store(true)
		w.kill()
	}
	for {
		select {
		case <-w.stop:
			return
		case <-ctxDone:
			ctxDone = nil
			killFor(StatusKilled)
		case <-wall.C:
			killFor(StatusTimeout)
		case <-overflow:
			overflow = nil
			killFor(StatusOutputLimit)
		case d := <-w.step:
			stepC = nil
			if d > 0 {
				t := time.NewTimer(d)
				defer t.Stop()
				stepC = t.C
			}
		case <-stepC:
			stepC = nil
			w.v.stepTimed = true
			killFor(StatusTimeout)
		case base := <-w.arm:
			w.v.cpuBase, w.v.armed = base, true
			t := time.NewTicker(cpuPoll)
			defer t.Stop()
			tick = t.C
		case <-tick:
			if u, err := w.usage(); err == nil && u-w.v.cpuBase > w.cpu {
				w.v.cpuKilled = true
				tick = nil
				killFor(StatusTimeout)
			}
		}
	}
}

// ending is how a run ended, as a backend saw it.
type ending struct {
	verdict
	failed   bool           // the last step that ran failed (non-zero exit or killed)
	timedOut bool           // the backend's own step timer ended the step
	signal   syscall.Signal // the step died of this signal (0: it exited)
	oomKills uint64         // OOM kills in the run's cgroup
	cpuUsed  time.Duration  // the run's CPU time at the end
}

// classify is the one place that decides a run's Status.
func classify(e ending) Status {
	// The last step used up its CPU allowance: a SIGKILL then is the CPU
	// limit's (the kernel's RLIMIT_CPU hard limit), not the code's own.
	cpuSpent := e.armed && e.cpuUsed-e.cpuBase >= e.cpuLimit
	switch {
	case e.reason == StatusKilled || e.reason == StatusOutputLimit:
		return e.reason
	case e.failed && e.oomKills > 0:
		return StatusMemory
	case e.reason == StatusTimeout || e.cpuKilled || e.stepTimed || e.timedOut:
		return StatusTimeout
	case e.signal == syscall.SIGXCPU || e.signal == syscall.SIGKILL && cpuSpent:
		return StatusTimeout
	case e.failed:
		return StatusError
	default:
		return StatusOK
	}
}

// outputSink copies stdout and stderr to their writers under one shared
// byte budget; past it, it signals overflow and discards.
type outputSink struct {
	mu       sync.Mutex
	left     int64
	w        [2]io.Writer
	overflow chan struct{}
	over     bool
	pumps    sync.WaitGroup
}

func newOutputSink(limit int64, stdout, stderr io.Writer) *outputSink {
	return &outputSink{left: limit, w: [2]io.Writer{stdout, stderr}, overflow: make(chan struct{})}
}

// start copies from the read ends of the run's stdout and stderr pipes.
func (s *outputSink) start(outR, errR *os.File) {
	s.pumps.Add(2)
	go func() { defer s.pumps.Done(); s.pump(outR, 0) }()
	go func() { defer s.pumps.Done(); s.pump(errR, 1) }()
}

// drain waits until the pipes are at their end. Once the run's processes
// are gone that is at once, unless something outside the run holds a write
// end: after a grace period the read ends are closed.
func (s *outputSink) drain(outR, errR *os.File) {
	done := make(chan struct{})
	go func() { s.pumps.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		outR.Close()
		errR.Close()
		<-done
	}
}

func (s *outputSink) pump(r io.Reader, which int) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.write(buf[:n], which)
		}
		if err != nil {
			return
		}
	}
}

func (s *outputSink) write(b []byte, which int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.over {
		return
	}
	n := int64(len(b))
	if n > s.left {
		n = s.left
		s.over = true
		close(s.overflow)
	}
	s.left -= n
	if w := s.w[which]; w != nil && n > 0 {
		_, _ = w.Write(b[:n])
	}
}
