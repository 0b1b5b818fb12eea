// Package sandboxtest is a Sandbox that isolates nothing and runs no
// submitted code, for the unit tests of what sits above the sandbox
// (engine, api, runtime): they then run without root, a kernel sandbox or
// toolchains, in seconds. A test gives the fake a Program that stands in for
// the code; the fake keeps the parts of the Sandbox contract its callers rely
// on (workdirs made and released once, output capped, wall time enforced,
// statuses classified) so a unit test passing on it means something. It
// must not know how any real backend works.
package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/sandbox"
)

// Run is one run as a Program sees it.
type Run struct {
	Spec sandbox.Spec
	// Dir is the host directory the code sees as /mnt/data (Spec.Workdir).
	Dir    string
	Stdout io.Writer
	Stderr io.Writer
}

// Path maps a path under /mnt/data to the host.
func (r *Run) Path(name string) string {
	return filepath.Join(r.Dir, filepath.FromSlash(strings.TrimPrefix(name, "/mnt/data/")))
}

// WriteFile writes name (relative to /mnt/data) as the code would.
func (r *Run) WriteFile(name string, data []byte) error {
	p := r.Path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// Source is the content of the spec's file at path (the submitted code
// lands in Spec.Files), or "".
func (r *Run) Source(path string) string {
	for _, f := range r.Spec.Files {
		if f.Path == path {
			return string(f.Data)
		}
	}
	return ""
}

// Program stands in for the code of one run. It writes to run.Stdout and
// run.Stderr and into run.Dir, and returns the result the code would have
// (its exit code; the fake fills in the status, times and output limit). It
// should return when ctx ends, as a killed process would.
type Program func(ctx context.Context, run *Run) (sandbox.Result, error)

// Fake is the Sandbox. The zero value is not usable; call New.
type Fake struct {
	program Program

	mu       sync.Mutex
	runs     []sandbox.Spec
	workdirs map[string]bool // open ones
	closed   bool
}

// New returns a fake whose runs are answered by p (nil: every run exits 0
// without output).
func New(p Program) *Fake {
	return &Fake{program: p, workdirs: map[string]bool{}}
}

// Runs returns the specs run so far, in order, without their writers.
func (f *Fake) Runs() []sandbox.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sandbox.Spec(nil), f.runs...)
}

// OpenWorkdirs lists the workdirs made and not released yet.
func (f *Fake) OpenWorkdirs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for d := range f.workdirs {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// NewWorkdir makes a host directory. The size cap is not enforced (there is
// no tmpfs): tests of the cap belong to the real backends.
func (f *Fake) NewWorkdir(maxBytes int64) (string, func() error, error) {
	if maxBytes <= 0 {
		return "", nil, fmt.Errorf("sandboxtest: workdir cap %d", maxBytes)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return "", nil, errors.New("sandboxtest: closed")
	}
	dir, err := os.MkdirTemp("", "sandboxtest-")
	if err != nil {
		return "", nil, err
	}
	f.workdirs[dir] = true
	var once sync.Once
	release := func() error {
		err := errors.New("sandboxtest: workdir released twice")
		once.Do(func() {
			f.mu.Lock()
			delete(f.workdirs, dir)
			f.mu.Unlock()
			err = os.RemoveAll(dir)
		})
		return err
	}
	return dir, release, nil
}

// Run checks the spec as a real backend would refuse it, then runs the
// program under the spec's wall time and output cap.
func (f *Fake) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Result, error) {
	if err := f.check(spec); err != nil {
		return sandbox.Result{}, err
	}
	rec := spec
	rec.Stdout, rec.Stderr = nil, nil
	f.mu.Lock()
	f.runs = append(f.runs, rec)
	f.mu.Unlock()

	capped := &capWriter{left: spec.Limits.OutputBytes}
	run := &Run{Spec: spec, Dir: spec.Workdir,
		Stdout: capped.to(spec.Stdout), Stderr: capped.to(spec.Stderr)}
	rctx, cancel := context.WithTimeout(ctx, spec.Limits.WallTime)
	defer cancel()
	start := time.Now()
	var res sandbox.Result
	var err error
	if f.program != nil {
		res, err = f.program(rctx, run)
	}
	res.WallTime = time.Since(start)
	switch {
	case err != nil:
		return sandbox.Result{}, err
	case ctx.Err() != nil:
		res.Status, res.ExitCode, res.Signal = sandbox.StatusKilled, 137, "SIGKILL"
	case rctx.Err() != nil:
		res.Status, res.ExitCode, res.Signal = sandbox.StatusTimeout, 137, "SIGKILL"
	case capped.over():
		res.Status, res.ExitCode, res.Signal = sandbox.StatusOutputLimit, 137, "SIGKILL"
	case res.Status == "" && res.ExitCode == 0:
		res.Status = sandbox.StatusOK
	case res.Status == "":
		res.Status = sandbox.StatusError
	}
	if res.Status != sandbox.StatusOK && res.FailedStep == "" {
		res.FailedStep = spec.Steps[len(spec.Steps)-1].Name
	}
	return res, nil
}

// check refuses what the real backends refuse, so a caller's bad spec fails
// its unit test too.
func (f *Fake) check(spec sandbox.Spec) error {
	f.mu.Lock()
	open, closed := f.workdirs[spec.Workdir], f.closed
	f.mu.Unlock()
	switch {
	case closed:
		return errors.New("sandboxtest: closed")
	case !open:
		return fmt.Errorf("sandboxtest: workdir %q was not made by NewWorkdir or is released", spec.Workdir)
	case len(spec.Steps) == 0:
		return errors.New("sandboxtest: no steps")
	case spec.Limits.WallTime <= 0 || spec.Limits.OutputBytes <= 0 || spec.Limits.MemoryBytes <= 0:
		return fmt.Errorf("sandboxtest: limits must be set: %+v", spec.Limits)
	}
	for _, s := range spec.Steps {
		if len(s.Argv) == 0 {
			return fmt.Errorf("sandboxtest: step %q has no argv", s.Name)
		}
	}
	for _, file := range spec.Files {
		if !strings.HasPrefix(file.Path, "/tmp/") || strings.Contains(file.Path, "/../") {
			return fmt.Errorf("sandboxtest: file path %q is not under /tmp", file.Path)
		}
	}
	return nil
}

// Describe names the fake.
func (f *Fake) Describe() sandbox.Isolation {
	return sandbox.Isolation{Backend: "sandboxtest", Network: "none: nothing runs", RootFS: "none: nothing runs"}
}

// Close fails if a workdir is still open: a caller leaked it.
func (f *Fake) Close() error {
	f.mu.Lock()
	f.closed = true
	n := len(f.workdirs)
	f.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("sandboxtest: %d workdirs never released: %v", n, f.OpenWorkdirs())
	}
	return nil
}

// capWriter bounds stdout and stderr together, as Limits.OutputBytes does.
type capWriter struct {
	mu   sync.Mutex
	left int64
	hit  bool
}

func (c *capWriter) over() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hit
}

func (c *capWriter) to(w io.Writer) io.Writer {
	if w == nil {
		w = io.Discard
	}
	return writerFunc(func(p []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		n := int64(len(p))
		if n > c.left {
			c.hit = true
			n = c.left
		}
		c.left -= n
		if _, err := w.Write(p[:n]); err != nil {
			return 0, err
		}
		if c.hit {
			return int(n), errors.New("sandboxtest: output limit")
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
