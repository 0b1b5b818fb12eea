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
		t.Fatal("the watchdog never killed the run")
	}
}

var unitLim = Limits{WallTime: time.Hour, CPUTime: time.Second, OutputBytes: 10}

func TestUnitWatchdogWallTime(t *testing.T) {
	f := newFakeRun()
	lim := unitLim
	lim.WallTime = 50 * time.Millisecond
	dog := watch(context.Background(), lim, nil, f.usage, f.kill)
	waitDead(t, f)
	v := dog.end()
	if v.reason != StatusTimeout || v.cpuKilled || v.stepTimed {
		t.Fatalf("verdict %+v", v)
	}
}

func TestUnitWatchdogCancel(t *testing.T) {
	f := newFakeRun()
	ctx, cancel := context.WithCancel(context.Background())
	dog := watch(ctx, unitLim, nil, f.usage, f.kill)
	cancel()
	waitDead(t, f)
	if v := dog.end(); v.reason != StatusKilled {
		t.Fatalf("verdict %+v", v)
	}
}

func TestUnitWatchdogOutput(t *testing.T) {
	f := newFakeRun()
	sink := newOutputSink(4, nil, nil)
	dog := watch(context.Background(), unitLim, sink.overflow, f.usage, f.kill)
	sink.write([]byte("abc"), 0)
	if dog.hasKilled() {
		t.Fatal("killed under the cap")
	}
	sink.write([]byte("de"), 1)
	waitDead(t, f)
	if v := dog.end(); v.reason != StatusOutputLimit {
		t.Fatalf("verdict %+v", v)
	}
}

// CPU time counts from the last step's start: what earlier steps (a
// compiler) used is not charged, and nothing is polled before.
func TestUnitWatchdogCPU(t *testing.T) {
	f := newFakeRun()
	f.cpu.Store(int64(5 * time.Second)) // the compile step's
	dog := watch(context.Background(), unitLim, nil, f.usage, f.kill)
	time.Sleep(3 * cpuPoll)
	if dog.hasKilled() {
		t.Fatal("killed for CPU used before the last step started")
	}
	dog.armCPU()
	f.cpu.Add(int64(900 * time.Millisecond))
	time.Sleep(3 * cpuPoll)
	if dog.hasKilled() {
		t.Fatal("killed under the CPU limit")
	}
	f.cpu.Add(int64(200 * time.Millisecond))
	waitDead(t, f)
	v := dog.end()
	if v.reason != StatusTimeout || !v.cpuKilled || !v.armed || v.cpuBase != 5*time.Second || v.cpuLimit != time.Second {
		t.Fatalf("verdict %+v", v)
	}
}

// A step's own limit ends that step only if it is still running; the next
// step's limit replaces it.
func TestUnitWatchdogStepLimit(t *testing.T) {
	f := newFakeRun()
	dog := watch(context.Background(), unitLim, nil, f.usage, f.kill)
	dog.stepLimit(time.Hour)
	dog.stepLimit(0) // the step ended: no limit until the next one
	dog.stepLimit(30 * time.Millisecond)
	waitDead(t, f)
	if v := dog.end(); v.reason != StatusTimeout || !v.stepTimed {
		t.Fatalf("verdict %+v", v)
	}
}

func TestUnitWatchdogQuiet(t *testing.T) {
	f := newFakeRun()
	dog := watch(context.Background(), unitLim, nil, f.usage, f.kill)
	dog.armCPU()
	if v := dog.end(); v.reason != "" || v.cpuKilled || f.kills.Load() != 0 {
		t.Fatalf("verdict %+v, %d kills", v, f.kills.Load())
	}
}

func TestUnitClassify(t *testing.T) {
	spent := verdict{armed: true, cpuBase: time.Second, cpuLimit: time.Second}
	cases := []struct {
		name string
		e    ending
		want Status
	}{
		{"ok", ending{}, StatusOK},
		{"exit 1", ending{failed: true}, StatusError},
		{"own signal", ending{failed: true, signal: syscall.SIGTERM}, StatusError},
		{"own SIGKILL under the CPU limit", ending{verdict: spent, failed: true, signal: syscall.SIGKILL, cpuUsed: 1500 * time.Millisecond}, StatusError},
		{"RLIMIT_CPU SIGKILL", ending{verdict: spent, failed: true, signal: syscall.SIGKILL, cpuUsed: 2 * time.Second}, StatusTimeout},
		{"SIGXCPU", ending{failed: true, signal: syscall.SIGXCPU}, StatusTimeout},
		{"step timer", ending{failed: true, timedOut: true}, StatusTimeout},
		{"wall", ending{verdict: verdict{reason: StatusTimeout}, failed: true}, StatusTimeout},
		{"cpu watchdog", ending{verdict: verdict{reason: StatusTimeout, cpuKilled: true}, failed: true}, StatusTimeout},
		{"oom", ending{failed: true, oomKills: 1, signal: syscall.SIGKILL}, StatusMemory},
		{"oom then wall", ending{verdict: verdict{reason: StatusTimeout}, failed: true, oomKills: 1}, StatusMemory},
		{"oom of a child, the step succeeded", ending{oomKills: 1}, StatusOK},
		{"cancelled", ending{verdict: verdict{reason: StatusKilled}, failed: true, oomKills: 1}, StatusKilled},
		{"output", ending{verdict: verdict{reason: StatusOutputLimit}, failed: true}, StatusOutputLimit},
	}
	for _, c := range cases {
		if got := classify(c.e); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
