// Package sandbox runs untrusted commands in isolation: "run these steps in
// this working directory under these limits" is the whole interface, and how
// (Linux namespaces, gVisor, ...) is up to the implementation.
package sandbox

import (
	"context"
	"io"
	"time"
)

// Status is the outcome class of a run, as reported to API clients.
type Status string

const (
	StatusOK          Status = "ok"           // every step exited 0
	StatusError       Status = "error"        // a step exited non-zero or was killed by its own signal
	StatusTimeout     Status = "timeout"      // wall-time or CPU-time limit hit
	StatusMemory      Status = "memory"       // the memory limit was hit (OOM kill)
	StatusOutputLimit Status = "output_limit" // stdout+stderr exceeded Limits.OutputBytes
	StatusKilled      Status = "killed"       // killed from outside (cancellation, shutdown)
)

// Limits bound one run. Zero means "implementation default", never "unlimited".
type Limits struct {
	WallTime    time.Duration // whole run, all steps
	CPUTime     time.Duration // CPU time of the run step
	MemoryBytes int64         // memory of the whole sandbox, no swap
	Pids        int           // processes and threads of the whole sandbox
	OutputBytes int64         // stdout and stderr together
	DiskBytes   int64         // size of /tmp (the working directory is capped by its owner)
	FileBytes   int64         // largest file a process may write (RLIMIT_FSIZE)
	// Network allows TCP and UDP sockets; the run still has a network
	// namespace of its own, which Spec.Net serves (without it there is no
	// interface but lo). false: AF_UNIX only, lo down. Never the host's.
	Network bool
}

// Step is one command run inside the sandbox, in order. A step that fails
// stops the run: its status and output are the run's.
type Step struct {
	Name string   // "compile" or "run"; for diagnostics
	Argv []string // argv[0] is resolved on the sandbox PATH
	// Timeout bounds this step alone (e.g. a compile step); 0 means the
	// remainder of Limits.WallTime.
	Timeout time.Duration
	// Stdin feeds this step's standard input; steps without it read /dev/null.
	Stdin []byte
}

// Spec describes one run.
type Spec struct {
	// Workdir is a host directory that appears read-write at /mnt/data and is
	// the steps' working directory. The sandbox may chown it and its
	// contents to the uid the code runs as.
	Workdir string
	Steps   []Step
	// Files are written by the sandbox before the first step, owned by the
	// code's uid, at absolute paths under /tmp (the private, size-capped
	// scratch space shared by all steps of this run): source code, mostly.
	Files []File
	// Env is the complete environment of every step; nothing of the server's
	// own environment is ever passed through.
	Env    []string
	Limits Limits
	// Stdout and Stderr receive the steps' output, at most Limits.OutputBytes
	// in total; the run ends with StatusOutputLimit when more is produced.
	Stdout io.Writer
	Stderr io.Writer
	// Cold runs the spec in a fresh sandbox, never in a warm pool's child:
	// for runs that talk to the server for their whole life (programmatic
	// tool calling), where the pool's shortcuts bring nothing.
	Cold bool
	// Net serves a networked run's (Limits.Network) namespace; nil leaves
	// it without any interface.
	Net NetAttacher
}

// NetAttacher connects a run's network namespace to the outside on the
// server's terms (an egress policy). The sandbox knows nothing else of it.
type NetAttacher interface {
	// Attach is called once, with the path of the run's network namespace
	// (/proc/<pid>/ns/net), before any of the run's code starts; an error
	// fails the run.
	Attach(nsPath string) error
	// Nameserver is the address written to the run's /etc/resolv.conf.
	Nameserver() string
}

// File is a file the sandbox writes inside itself before the first step.
type File struct {
	Path string // absolute, under /tmp
	Data []byte
	Mode uint32 // permission bits; 0 means 0644
}

// Result is what a run produced besides its output.
type Result struct {
	Status     Status
	ExitCode   int    // of the last step that ran; 128+signal when killed by a signal
	Signal     string // e.g. "SIGKILL" when the last step died of a signal
	FailedStep string // name of the step that failed, if any
	WallTime   time.Duration
	CPUTime    time.Duration
	MemoryPeak int64 // bytes, whole sandbox
}

// Sandbox runs specs. Implementations must leave nothing behind after Run
// returns: no process, mount, cgroup or temporary directory of the run.
type Sandbox interface {
	// NewWorkdir makes an empty host directory for one run's /mnt/data,
	// capped at maxBytes by the kernel (e.g. a tmpfs). The caller stages
	// input files into it, passes it as Spec.Workdir, collects outputs from
	// it after Run, and calls release exactly once.
	NewWorkdir(maxBytes int64) (dir string, release func() error, err error)
	// Run executes spec.Steps. An error means the sandbox itself failed (the
	// code did not run as asked); the code's own failures are in Result.
	Run(ctx context.Context, spec Spec) (Result, error)
	// Describe reports the isolation actually in force, for /health and doctor.
	Describe() map[string]any
	// Close releases what the sandbox holds (cgroups, run directories).
	Close() error
}
