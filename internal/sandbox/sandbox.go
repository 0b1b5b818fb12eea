// Package sandbox runs untrusted commands in isolation: "run these steps in
// this working directory under these limits" is the whole interface, and how
// is up to a backend. It owns that interface (Sandbox, Spec, Limits and
// their defaults, Result and Status, the typed Isolation report) and the one
// run supervisor every backend and the warm pool use (supervise.go: Watch,
// OutputSink, Classify). The backends and what they share are its
// sub-packages: cgroup, seccomp, policy, host, nsinit (shared pieces), then
// native, gvisor and warm (backends; only cmd/codeexec and tests import
// them). It must not know any backend, languages, requests, storage or
// HTTP: a run is argv, files and limits.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
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
	// Warm names the warm template that may run this spec's code in its
	// own, pre-imported interpreter: the language's (lang.Language.Warm),
	// set by the engine; "" for none. A backend without such a template
	// ignores it.
	Warm string
	// Started, when set, is called once the run's processes are in their
	// cgroup, before any of the steps' code runs, with the run's freezer
	// (valid until Run returns); not called when the sandbox cannot
	// freeze (no cgroups). A live sandbox (a stateful session) is kept
	// frozen with it between the calls it serves.
	Started func(Freezer)
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

// Freezer stops and resumes every process of a running sandbox (the cgroup
// freezer). Both return once the kernel reports the change done. Once the
// run is being killed or has ended, both fail with ErrRunEnded, and the
// sandbox thaws what it froze so that its processes can die.
type Freezer interface {
	Freeze() error
	Thaw() error
}

// ErrRunEnded: the run a Freezer belongs to is ending or over.
var ErrRunEnded = errors.New("sandbox: the run has ended")

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
	Describe() Isolation
	// Close releases what the sandbox holds (cgroups, run directories).
	Close() error
}

// Isolation is what a backend reports of the isolation in force: the facts
// tests and tools read as fields, and a sentence each for people (/health,
// the console, doctor).
type Isolation struct {
	Backend  string `json:"backend"` // "linux", "gvisor"
	Instance int    `json:"instance"`
	Slots    int    `json:"slots"` // runs at once (the native backend counts warm templates too)
	// Host uids: slot s's ids 0-65535 map to UIDBase + s*UIDSpan onward
	// (gVisor: UIDSpan 0, the code's uid is the sentry's own mapping).
	UIDBase    uint32       `json:"uid_base"`
	UIDSpan    uint32       `json:"uid_span"`
	UserNS     bool         `json:"userns,omitempty"`
	UIDMap     string       `json:"uid_map,omitempty"`
	User       string       `json:"user,omitempty"`
	Namespaces []string     `json:"namespaces,omitempty"`
	Cgroup     CgroupReport `json:"cgroup"`
	Degraded   bool         `json:"degraded"`
	Seccomp    string       `json:"seccomp,omitempty"`
	Network    string       `json:"network"`
	RootFS     string       `json:"rootfs"`
	CPUs       float64      `json:"cpus"`
	Runsc      string       `json:"runsc,omitempty"`
	Platform   string       `json:"platform,omitempty"`
	Kernel     string       `json:"kernel,omitempty"`
	Warm       *WarmReport  `json:"warm,omitempty"` // nil: no warm pool
	// Egress is the network policy of networked runs, when a server
	// wraps the sandbox with one (internal/egress).
	Egress any `json:"egress,omitempty"`
}

// CgroupReport describes the cgroup tree runs are limited by.
type CgroupReport struct {
	Version     int      `json:"version"` // 1 or 2; 0: none (degraded)
	Path        string   `json:"path,omitempty"`
	Controllers []string `json:"controllers,omitempty"`
	MemSW       bool     `json:"memsw,omitempty"`       // v1: swap is limited too
	Freezer     bool     `json:"freezer,omitempty"`     // v1: the freezer hierarchy is used (v2 always can)
	MemoryPeak  string   `json:"memory_peak,omitempty"` // v2: how the peak is measured
	Instead     string   `json:"instead,omitempty"`     // degraded: what limits runs instead
}

// WarmReport describes the warm pool.
type WarmReport struct {
	Python WarmPython `json:"python"`
}

// WarmPython describes the pool's Python templates.
type WarmPython struct {
	Templates   int    `json:"templates"`
	Ready       int    `json:"ready"`
	Spares      int    `json:"spares"`
	Preloaded   int    `json:"preloaded"`
	Lean        int    `json:"lean"`
	Interpreter string `json:"interpreter"`
	Isolation   string `json:"isolation"`
	Serves      string `json:"serves"`
	Served      int64  `json:"served"` // runs served warm since start
	PinnedPages []int  `json:"pinned_pages"`
}

// ValidateSpec refuses a spec no backend may run: a relative or missing
// workdir, no steps, a step without argv, a file outside /tmp, a malformed
// environment entry. Every backend checks it before anything else.
func ValidateSpec(spec Spec) error {
	if !filepath.IsAbs(spec.Workdir) {
		return fmt.Errorf("sandbox: workdir %q is not absolute", spec.Workdir)
	}
	fi, err := os.Lstat(spec.Workdir)
	if err != nil {
		return fmt.Errorf("sandbox: workdir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("sandbox: workdir %s is not a directory", spec.Workdir)
	}
	if len(spec.Steps) == 0 {
		return errors.New("sandbox: no steps")
	}
	for _, st := range spec.Steps {
		if len(st.Argv) == 0 || st.Argv[0] == "" {
			return fmt.Errorf("sandbox: step %q has no argv", st.Name)
		}
	}
	for _, f := range spec.Files {
		if p := path.Clean(f.Path); p != f.Path || !strings.HasPrefix(p, "/tmp/") {
			return fmt.Errorf("sandbox: file %q must be a clean absolute path under /tmp", f.Path)
		}
	}
	for _, kv := range spec.Env {
		if !strings.Contains(kv, "=") || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("sandbox: bad env entry %q", kv)
		}
	}
	return nil
}
