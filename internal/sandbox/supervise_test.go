package sandbox

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeRun stands in for a run's processes: kill records that it was
// called, usage is a CPU counter the test moves.
type fakeRun struct {
	kills atomic.Int32
	cpu   atomic.Int64 // nanoseconds
	dead  chan struct{}
	once  sync.Once
}

func newFakeRun() *fakeRun { return &fakeRun{dead: make(chan struct{})} }

func (f *fakeRun) kill() {
	f.kills.Add(1)
	f.once.Do(func() { close(f.dead) })
}

func (f *fakeRun) usage() (time.Duration, error) { return time.Duration(f.cpu.Load()), nil }

func waitDead(t *testing.T, f *fakeRun) {
	t.Helper()
	select {
	case <-f.dead:
	case <-time.After(10 * time.Second):
		t.Fatal("the Watchdog never killed the run")
	}
}

var unitLim = Limits{WallTime: time.Hour, CPUTime: time.Second, OutputBytes: 10}

func TestUnitWatchdogWallTime(t *testing.T) {
	f := newFakeRun()
	lim := unitLim
	lim.WallTime = 50 * time.Millisecond
	dog := Watch(context.Background(), lim, nil, f.usage, f.kill)
	waitDead(t, f)
	v := dog.End()
	if v.Reason != StatusTimeout || v.CPUKilled || v.StepTimed {
		t.Fatalf("Verdict %+v", v)
	}
}

func TestUnitWatchdogCancel(t *testing.T) {
	f := newFakeRun()
	ctx, cancel := context.WithCancel(context.Background())
	dog := Watch(ctx, unitLim, nil, f.usage, f.kill)
	cancel()
	waitDead(t, f)
	if v := dog.End(); v.Reason != StatusKilled {
		t.Fatalf("Verdict %+v", v)
	}
}

func TestUnitWatchdogOutput(t *testing.T) {
	f := newFakeRun()
	sink := NewOutputSink(4, nil, nil)
	dog := Watch(context.Background(), unitLim, sink.Overflow(), f.usage, f.kill)
	sink.write([]byte("abc"), 0)
	if dog.HasKilled() {
		t.Fatal("killed under the cap")
	}
	sink.write([]byte("de"), 1)
	waitDead(t, f)
	if v := dog.End(); v.Reason != StatusOutputLimit {
		t.Fatalf("Verdict %+v", v)
	}
}

// CPU time counts from the last step's start: what earlier steps (a
// compiler) used is not charged, and nothing is polled before.
func TestUnitWatchdogCPU(t *testing.T) {
	f := newFakeRun()
	f.cpu.Store(int64(5 * time.Second)) // the compile step's
	dog := Watch(context.Background(), unitLim, nil, f.usage, f.kill)
	time.Sleep(3 * CPUPoll)
	if dog.HasKilled() {
		t.Fatal("killed for CPU used before the last step started")
	}
	dog.ArmCPU()
	f.cpu.Add(int64(900 * time.Millisecond))
	time.Sleep(3 * CPUPoll)
	if dog.HasKilled() {
		t.Fatal("killed under the CPU limit")
	}
	f.cpu.Add(int64(200 * time.Millisecond))
	waitDead(t, f)
	v := dog.End()
	if v.Reason != StatusTimeout || !v.CPUKilled || !v.Armed || v.CPUBase != 5*time.Second || v.CPULimit != time.Second {
		t.Fatalf("Verdict %+v", v)
	}
}

// A step's own limit ends that step only if it is still running; the next
// step's limit replaces it.
func TestUnitWatchdogStepLimit(t *testing.T) {
	f := newFakeRun()
	dog := Watch(context.Background(), unitLim, nil, f.usage, f.kill)
	dog.StepLimit(time.Hour)
	dog.StepLimit(0) // the step ended: no limit until the next one
	dog.StepLimit(30 * time.Millisecond)
	waitDead(t, f)
	if v := dog.End(); v.Reason != StatusTimeout || !v.StepTimed {
		t.Fatalf("Verdict %+v", v)
	}
}

func TestUnitWatchdogQuiet(t *testing.T) {
	f := newFakeRun()
	dog := Watch(context.Background(), unitLim, nil, f.usage, f.kill)
	dog.ArmCPU()
	if v := dog.End(); v.Reason != "" || v.CPUKilled || f.kills.Load() != 0 {
		t.Fatalf("Verdict %+v, %d kills", v, f.kills.Load())
	}
}

func TestUnitClassify(t *testing.T) {
	spent := Verdict{Armed: true, CPUBase: time.Second, CPULimit: time.Second}
	cases := []struct {
		name string
		e    Ending
		want Status
	}{
		{"ok", Ending{}, StatusOK},
		{"exit 1", Ending{Failed: true}, StatusError},
		{"own signal", Ending{Failed: true, Signal: syscall.SIGTERM}, StatusError},
		{"own SIGKILL under the CPU limit", Ending{Verdict: spent, Failed: true, Signal: syscall.SIGKILL, CPUUsed: 1500 * time.Millisecond}, StatusError},
		{"RLIMIT_CPU SIGKILL", Ending{Verdict: spent, Failed: true, Signal: syscall.SIGKILL, CPUUsed: 2 * time.Second}, StatusTimeout},
		{"SIGXCPU", Ending{Failed: true, Signal: syscall.SIGXCPU}, StatusTimeout},
		{"step timer", Ending{Failed: true, TimedOut: true}, StatusTimeout},
		{"wall", Ending{Verdict: Verdict{Reason: StatusTimeout}, Failed: true}, StatusTimeout},
		{"cpu Watchdog", Ending{Verdict: Verdict{Reason: StatusTimeout, CPUKilled: true}, Failed: true}, StatusTimeout},
		{"oom", Ending{Failed: true, OOMKills: 1, Signal: syscall.SIGKILL}, StatusMemory},
		{"oom then wall", Ending{Verdict: Verdict{Reason: StatusTimeout}, Failed: true, OOMKills: 1}, StatusMemory},
		{"oom of a child, the step succeeded", Ending{OOMKills: 1}, StatusOK},
		{"cancelled", Ending{Verdict: Verdict{Reason: StatusKilled}, Failed: true, OOMKills: 1}, StatusKilled},
		{"output", Ending{Verdict: Verdict{Reason: StatusOutputLimit}, Failed: true}, StatusOutputLimit},
	}
	for _, c := range cases {
		if got := Classify(c.e); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
