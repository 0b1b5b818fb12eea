// Package engine is the execution core both APIs share: stage a request's
// files into a fresh working directory, run the code in a sandbox, and
// collect what it wrote back into storage. It is the one place that maps
// the server's limits onto a run's. It must not know HTTP or either API's
// wire format, nor how the sandbox isolates (only the Sandbox interface).
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
	"github.com/codeexec/codeexec/internal/storage"
	"github.com/codeexec/codeexec/internal/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Errors the API maps to client errors (4xx). Wrapped with details.
var (
	ErrInvalid      = errors.New("invalid request")             // 400
	ErrUnauthorized = errors.New("Unauthorized file reference") // 403
	ErrUnavailable  = errors.New("language not available")      // 400 naming what to install
	ErrSandbox      = errors.New("sandbox failure")             // 500: the code could not be run as asked
)

// Limits are the server's caps for every execution.
type Limits struct {
	WallTime         time.Duration // default and maximum of a request's timeout
	CPUTime          time.Duration
	MemoryBytes      int64
	Pids             int
	OutputBytes      int64
	DiskBytes        int64 // /mnt/data and /tmp, each
	CollectFileBytes int64 // largest output file collected back (not RLIMIT_FSIZE: the sandbox caps writes at DiskBytes)
	// CollectTotalBytes bounds the bytes of all output files one run stores
	// together, as read (a sparse file counts at its full length); 0 means
	// DiskBytes, what the run could really write.
	CollectTotalBytes int64
	MaxOutputFiles    int
	MaxInputFiles     int
	Network           bool
}

// Engine runs executions. It is safe for concurrent use.
type Engine struct {
	store  storage.Store
	box    sandbox.Sandbox
	limits Limits
	log    *slog.Logger

	versions sync.Map // language id -> *versionOnce
	cache    *CompileCache
}

// New returns an engine over a store and a sandbox.
func New(store storage.Store, box sandbox.Sandbox, limits Limits, log *slog.Logger) *Engine {
	return &Engine{store: store, box: box, limits: limits, log: log}
}

// FileRef names a stored file to place at /mnt/data/<Name> before the run.
type FileRef struct {
	Session string // storage session of the bytes
	ID      string
	Name    string // path relative to /mnt/data
}

// Request is one execution.
type Request struct {
	Lang    *lang.Language
	Code    string
	Args    []string
	Stdin   string
	Files   []FileRef
	Timeout time.Duration // 0: the server's limit; larger values are clamped
	// Session receives the generated files; "" makes a fresh one.
	Session string
	// Owner is the principal making the request ("" for shared keys); refs
	// to files another principal owns are refused.
	Owner string
	// Persist makes the run's outputs replace its inputs in Session: inputs
	// of that session the code changed or deleted are removed from it, so
	// the session holds one file per name (the /v1/sessions model).
	Persist bool
}

// OutFile is one entry of a result's file list.
type OutFile struct {
	ID           string
	Name         string
	Session      string // storage session of the bytes
	Size         int64
	ContentType  string
	Inherited    bool         // an unchanged input, echoed
	ModifiedFrom *storage.Key // the input it overwrote
}

// Truncation reports output files left out of a result, and why.
type Truncation struct {
	Reasons map[string]int
	Skipped []string // at most 20 paths
	Count   int
}

// Result is what an execution produced.
type Result struct {
	Session      string
	Stdout       string
	Stderr       string
	Status       sandbox.Status
	ExitCode     int
	Signal       string
	WallTime     time.Duration
	CPUTime      time.Duration
	MemoryPeak   int64
	Language     string
	Version      string
	Files        []OutFile
	DeletedFiles []string
	Truncation   *Truncation
}

// Env is the complete environment of sandboxed code, before the
// language's own additions: fixed, never derived from the server's.
var Env = []string{
	"PATH=/usr/local/bin:/usr/bin:/bin",
	"HOME=/tmp",
	"TMPDIR=/tmp",
	"LANG=C.UTF-8",
	"LC_ALL=C.UTF-8",
	"USER=sandbox",
	"LOGNAME=sandbox",
	"SHELL=/bin/bash",
	"TERM=dumb",
}

// Available reports whether the language's toolchain is installed here, and
// if not, what is missing.
func Available(l *lang.Language) (bool, string) {
	for _, p := range l.Requires {
		if _, err := os.Stat(p); err != nil { // programs, and data such as Go's importcfg
			return false, fmt.Sprintf("%s is not installed on this server (missing %s; install the Debian package(s) %s, e.g. with scripts/install-deps.sh)",
				l.Name, p, strings.Join(l.Packages, ", "))
		}
	}
	return true, ""
}

type versionOnce struct {
	once sync.Once
	v    string
}

// Version reads the language's toolchain version once and caches it.
func (e *Engine) Version(l *lang.Language) string {
	vo, _ := e.versions.LoadOrStore(l.ID, &versionOnce{})
	o := vo.(*versionOnce)
	o.once.Do(func() {
		if len(l.Version) == 0 {
			return
		}
		if ok, _ := Available(l); !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, l.Version[0], l.Version[1:]...)
		cmd.Env = append(append([]string{}, Env...), l.Env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.log.Warn("reading toolchain version", "lang", l.ID, "err", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				o.v = line
				break
			}
		}
	})
	return o.v
}

// Hooks let a caller shape one run of ExecWith: the programmatic tool
// calling transport talks to the running code over a socket it places in the
// working directory, and stops the run by its own clock.
type Hooks struct {
	// Prepare adjusts the sandbox spec once the inputs are staged in dir.
	Prepare func(dir string, spec *sandbox.Spec) error
	// Stop, when it delivers a status, kills the run and reports that
	// status (e.g. StatusTimeout); the outputs are collected as usual.
	Stop <-chan sandbox.Status
	// AfterRun is called when the sandbox has ended, before collection.
	AfterRun func()
}

// Exec runs one request: stage, run, collect.
func (e *Engine) Exec(ctx context.Context, req Request) (*Result, error) {
	return e.ExecWith(ctx, req, nil)
}

// ExecWith is Exec with hooks (nil: none).
func (e *Engine) ExecWith(ctx context.Context, req Request, hooks *Hooks) (*Result, error) {
	if req.Lang == nil {
		return nil, fmt.Errorf("%w: no language", ErrInvalid)
	}
	if ok, why := Available(req.Lang); !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, why)
	}
	inputs, err := e.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	session := req.Session
	if session == "" {
		session = storage.NewID()
	}

	dir, release, err := e.box.NewWorkdir(e.limits.DiskBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: working directory: %v", ErrSandbox, err)
	}
	defer func() {
		if err := release(); err != nil {
			e.log.Error("releasing working directory", "err", err)
		}
	}()
	sctx, span := tracing.Tracer().Start(ctx, "stage", trace.WithAttributes(attribute.Int("files", len(inputs))))
	staged, err := e.stage(sctx, dir, inputs)
	span.End()
	if err != nil {
		return nil, err
	}

	var stdout, stderr bytes.Buffer
	rctx, span := tracing.Tracer().Start(ctx, "sandbox.run", trace.WithAttributes(attribute.String("language", req.Lang.ID)))
	var run sandbox.Result
	if hooks == nil {
		run, err = e.run(rctx, req, dir, &stdout, &stderr)
	} else {
		run, err = e.runHooked(rctx, req, dir, &stdout, &stderr, hooks)
	}
	span.SetAttributes(attribute.String("status", string(run.Status)), attribute.Int("exit_code", run.ExitCode))
	span.End()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrSandbox, err)
	}

	res := &Result{
		Session:    session,
		Stdout:     stdout.String(),
		Stderr:     stderr.String(),
		Status:     run.Status,
		ExitCode:   run.ExitCode,
		Signal:     run.Signal,
		WallTime:   run.WallTime,
		CPUTime:    run.CPUTime,
		MemoryPeak: run.MemoryPeak,
		Language:   req.Lang.ID,
		Version:    e.Version(req.Lang),
	}
	res.Stderr += statusNote(run, req)
	cctx, span := tracing.Tracer().Start(ctx, "collect")
	err = e.collect(cctx, dir, session, req.Owner, staged, res)
	span.SetAttributes(attribute.Int("files", len(res.Files)))
	span.End()
	if err != nil {
		return nil, err
	}
	if req.Persist {
		if err := e.supersede(ctx, session, staged, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// runHooked runs a request's spec as hooks shape it, without the compile
// cache (hooked runs are interpreted languages).
func (e *Engine) runHooked(ctx context.Context, req Request, dir string, stdout, stderr *bytes.Buffer, hooks *Hooks) (sandbox.Result, error) {
	spec := e.spec(req, dir)
	spec.Stdout, spec.Stderr = stdout, stderr
	if hooks.AfterRun != nil {
		defer hooks.AfterRun()
	}
	if hooks.Prepare != nil {
		if err := hooks.Prepare(dir, &spec); err != nil {
			return sandbox.Result{}, err
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopped sandbox.Status
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case st := <-hooks.Stop:
			stopped = st
			cancel()
		case <-done:
		}
	}()
	run, err := e.box.Run(rctx, spec)
	close(done)
	<-watched
	if stopped != "" && (run.Status == sandbox.StatusKilled || err != nil) && ctx.Err() == nil {
		run.Status, err = stopped, nil
	}
	return run, err
}

// statusNote explains in stderr why the sandbox stopped the code, so that a
// model reading only stdout/stderr learns what happened.
func statusNote(run sandbox.Result, req Request) string {
	switch run.Status {
	case sandbox.StatusTimeout:
		return "\n[codeexec] execution stopped: time limit exceeded\n"
	case sandbox.StatusMemory:
		return "\n[codeexec] execution stopped: memory limit exceeded\n"
	case sandbox.StatusOutputLimit:
		return "\n[codeexec] output truncated: output limit exceeded\n"
	case sandbox.StatusKilled:
		return "\n[codeexec] execution was cancelled\n"
	}
	return ""
}

// spec builds the sandbox spec of a request.
func (e *Engine) spec(req Request, dir string) sandbox.Spec {
	l := req.Lang
	wall := e.limits.WallTime
	if req.Timeout > 0 && req.Timeout < wall {
		wall = req.Timeout
	}
	var steps []sandbox.Step
	if len(l.Compile) > 0 {
		ct := l.CompileTimeout
		if ct == 0 {
			ct = lang.DefaultCompileTimeout
		}
		steps = append(steps, sandbox.Step{Name: "compile", Argv: l.Expand(l.Compile, req.Code), Timeout: ct})
		wall += ct // compiling is not charged to the program's own time
	}
	run := sandbox.Step{Name: "run", Argv: append(l.Expand(l.Run, req.Code), req.Args...)}
	if req.Stdin != "" {
		run.Stdin = []byte(req.Stdin)
	}
	steps = append(steps, run)
	env := StepEnv(l)
	return sandbox.Spec{
		Workdir: dir,
		Steps:   steps,
		Files:   []sandbox.File{{Path: l.SourcePath(req.Code), Data: []byte(req.Code)}},
		Env:     env,
		Warm:    l.Warm,
		Limits:  e.limits.Sandbox(wall),
	}
}

// Sandbox is the one mapping of the server's limits to the kernel's limits
// of a run lasting at most wall (0: the server's wall time). A process may
// write a file as large as the run's disk (RLIMIT_FSIZE); how much of it is
// collected back is the engine's own cap (CollectFileBytes, CollectTotalBytes).
func (l Limits) Sandbox(wall time.Duration) sandbox.Limits {
	if wall <= 0 {
		wall = l.WallTime
	}
	return sandbox.Limits{
		WallTime:    wall,
		CPUTime:     l.CPUTime,
		MemoryBytes: l.MemoryBytes,
		Pids:        l.Pids,
		OutputBytes: l.OutputBytes,
		DiskBytes:   l.DiskBytes,
		FileBytes:   l.DiskBytes,
		Network:     l.Network,
	}
}

// liveKernelOutput caps what a stateful session's kernel itself prints:
// each call's output travels over the kernel's socket under OutputBytes, so
// the process's own stdout carries only diagnostics.
const liveKernelOutput = 64 << 10

// Live is the kernel's limits of a stateful session that lives at most
// lifetime: wall and CPU time are the session's, not one call's (a call's
// own time limit is the kernel's to enforce).
func (l Limits) Live(lifetime time.Duration) sandbox.Limits {
	lim := l.Sandbox(lifetime)
	lim.CPUTime = lifetime
	lim.OutputBytes = liveKernelOutput
	return lim
}
