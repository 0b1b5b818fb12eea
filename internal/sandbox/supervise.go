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
//   - a Watchdog, the only thing that kills a run from outside: at the wall
//     time, at the CPU time of the last step (polled from the run's cgroup:
//     RLIMIT_CPU counts one process, not the run), past the output cap, and
//     on cancellation;
//   - an output sink that copies stdout and stderr under one byte cap and is
//     drained the same way after the run;
//   - Classify, the only place that turns how a run ended into a Status.

// CPUPoll is how often the Watchdog reads the run's CPU time.
const CPUPoll = 50 * time.Millisecond

// Watchdog enforces a run's outside limits until End is called.
type Watchdog struct {
	kill  func()                        // ends every process of the run; may be called more than once
	usage func() (time.Duration, error) // the run's CPU time so far
	cpu   time.Duration                 // the last step's CPU allowance

	arm  chan time.Duration // a step's CPU base: start polling against it
	step chan time.Duration // a step's own time limit (0: none)
	stop chan struct{}
	done chan struct{}

	// Set by the Watchdog's goroutine; read after End.
	v      Verdict
	killed atomic.Bool // it killed the run (readable any time)
}

// Verdict is what the Watchdog did.
type Verdict struct {
	Reason    Status // why it killed the run ("": it did not)
	CPUKilled bool   // it killed at the CPU limit
	StepTimed bool   // it killed at a step's own time limit
	CPUBase   time.Duration
	Armed     bool          // the last step started, and cpuBase is its start
	CPULimit  time.Duration // the last step's CPU allowance
}

// Watch starts a Watchdog over a run whose limits are lim: the wall clock
// starts now.
func Watch(ctx context.Context, lim Limits, overflow <-chan struct{}, usage func() (time.Duration, error), kill func()) *Watchdog {
	w := &Watchdog{kill: kill, usage: usage, cpu: lim.CPUTime,
		arm: make(chan time.Duration, 1), step: make(chan time.Duration, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop(ctx, lim.WallTime, overflow)
	return w
}

// ArmCPU says the last step starts now: its CPU time counts from here.
func (w *Watchdog) ArmCPU() {
	base, _ := w.usage()
	w.arm <- base
}

// StepLimit bounds the step that starts now by d (0: only the wall time),
// for backends whose init does not time steps itself.
func (w *Watchdog) StepLimit(d time.Duration) { w.step <- d }

// HasKilled says whether the Watchdog has killed the run so far.
func (w *Watchdog) HasKilled() bool { return w.killed.Load() }

// End stops the Watchdog and says what it did. Call it once the run's
// processes are gone.
func (w *Watchdog) End() Verdict {
	close(w.stop)
	<-w.done
	w.v.CPULimit = w.cpu
	return w.v
}

func (w *Watchdog) loop(ctx context.Context, wallTime time.Duration, overflow <-chan struct{}) {
	defer close(w.done)
	wall := time.NewTimer(wallTime)
	defer wall.Stop()
	var stepC <-chan time.Time
	var tick <-chan time.Time
	ctxDone := ctx.Done()
	killFor := func(r Status) {
		if w.v.Reason == "" {
			w.v.Reason = r
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
			w.v.StepTimed = true
			killFor(StatusTimeout)
		case base := <-w.arm:
			w.v.CPUBase, w.v.Armed = base, true
			t := time.NewTicker(CPUPoll)
			defer t.Stop()
			tick = t.C
		case <-tick:
			if u, err := w.usage(); err == nil && u-w.v.CPUBase > w.cpu {
				w.v.CPUKilled = true
				tick = nil
				killFor(StatusTimeout)
			}
		}
	}
}

// Ending is how a run ended, as a backend saw it.
type Ending struct {
	Verdict
	Failed   bool           // the last step that ran failed (non-zero exit or killed)
	TimedOut bool           // the backend's own step timer ended the step
	Signal   syscall.Signal // the step died of this signal (0: it exited)
	OOMKills uint64         // OOM kills in the run's cgroup
	CPUUsed  time.Duration  // the run's CPU time at the end
}

// Classify is the one place that decides a run's Status.
func Classify(e Ending) Status {
	// The last step used up its CPU allowance: a SIGKILL then is the CPU
	// limit's (the kernel's RLIMIT_CPU hard limit), not the code's own.
	cpuSpent := e.Armed && e.CPUUsed-e.CPUBase >= e.CPULimit
	switch {
	case e.Reason == StatusKilled || e.Reason == StatusOutputLimit:
		return e.Reason
	case e.Failed && e.OOMKills > 0:
		return StatusMemory
	case e.Reason == StatusTimeout || e.CPUKilled || e.StepTimed || e.TimedOut:
		return StatusTimeout
	case e.Signal == syscall.SIGXCPU || e.Signal == syscall.SIGKILL && cpuSpent:
		return StatusTimeout
	case e.Failed:
		return StatusError
	default:
		return StatusOK
	}
}

// OutputSink copies stdout and stderr to their writers under one shared
// byte budget; past it, it signals overflow and discards.
type OutputSink struct {
	mu       sync.Mutex
	left     int64
	w        [2]io.Writer
	overflow chan struct{}
	over     bool
	pumps    sync.WaitGroup
}

// NewOutputSink makes a sink that passes on at most limit bytes of the two.
func NewOutputSink(limit int64, stdout, stderr io.Writer) *OutputSink {
	return &OutputSink{left: limit, w: [2]io.Writer{stdout, stderr}, overflow: make(chan struct{})}
}

// Overflow is closed once more than the limit was written.
func (s *OutputSink) Overflow() <-chan struct{} { return s.overflow }

// Start copies from the read ends of the run's stdout and stderr pipes.
func (s *OutputSink) Start(outR, errR *os.File) {
	s.pumps.Add(2)
	go func() { defer s.pumps.Done(); s.pump(outR, 0) }()
	go func() { defer s.pumps.Done(); s.pump(errR, 1) }()
}

// Drain waits until the pipes are at their end. Once the run's processes
// are gone that is at once, unless something outside the run holds a write
// end: after a grace period the read ends are closed.
func (s *OutputSink) Drain(outR, errR *os.File) {
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

func (s *OutputSink) pump(r io.Reader, which int) {
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

func (s *OutputSink) write(b []byte, which int) {
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
