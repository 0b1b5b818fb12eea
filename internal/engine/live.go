package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"

	"github.com/codeexec/codeexec/internal/sandbox"
)

// Workspace is a working directory that outlives one run: a stateful
// session's /mnt/data. Between calls it holds what the code left there; the
// engine remembers which stored file each name was last reported as, so that
// a call reports only what changed.
type Workspace struct {
	Dir     string
	release func() error
	known   map[string]*input
}

// NewWorkspace makes a size-capped working directory for a live sandbox.
func (e *Engine) NewWorkspace() (*Workspace, error) {
	dir, release, err := e.box.NewWorkdir(e.limits.DiskBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: working directory: %v", ErrSandbox, err)
	}
	return &Workspace{Dir: dir, release: release, known: map[string]*input{}}, nil
}

// Close removes the workspace.
func (w *Workspace) Close() error { return w.release() }

// Stage places req.Files in the workspace before a call. A ref already
// there under the same id is left as the session has it; another file of
// that name is replaced. Staged files are writable by the sandbox's uid
// (the live sandbox is not re-chowned between calls).
func (e *Engine) Stage(ctx context.Context, w *Workspace, req Request) error {
	inputs, err := e.resolve(ctx, req)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, in := range inputs {
		if k := w.known[in.ref.Name]; k != nil && k.ref.Session == in.ref.Session && k.ref.ID == in.ref.ID {
			continue
		}
		name := in.ref.Name
		if err := root.RemoveAll(name); err != nil {
			return fmt.Errorf("staging %q: %w", name, err)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if err := root.MkdirAll(d, 0o777); err != nil {
				return fmt.Errorf("%w: staging %q: %v", ErrInvalid, name, err)
			}
			root.Chmod(d, 0o777)
		}
		if err := e.stageOne(ctx, root, in); err != nil {
			return err
		}
		if !in.readOnly {
			root.Chmod(name, 0o666)
		}
		w.known[name] = in
	}
	return nil
}

// Harvest collects what a call left in the workspace, as Exec does after a
// one-shot run, and remembers it for the next call.
func (e *Engine) Harvest(ctx context.Context, w *Workspace, req Request, session string, res *Result) error {
	before := make(map[string]*input, len(w.known))
	for k, v := range w.known {
		before[k] = v
	}
	if err := e.collect(ctx, w.Dir, session, req.Owner, before, res); err != nil {
		return err
	}
	if req.Persist {
		if err := e.supersede(ctx, session, before, res); err != nil {
			return err
		}
	}
	root, err := os.OpenRoot(w.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, name := range res.DeletedFiles {
		delete(w.known, name)
	}
	for _, f := range res.Files {
		if f.Inherited {
			continue
		}
		in := &input{ref: FileRef{Session: f.Session, ID: f.ID, Name: f.Name}, size: f.Size}
		if sum, err := fileSum(root, f.Name); err == nil {
			in.sum = sum
			w.known[f.Name] = in
		}
	}
	return nil
}

// RunLive starts a long-lived sandbox over a workspace; it returns when the
// sandbox ends (ctx cancelled, or its process exited).
func (e *Engine) RunLive(ctx context.Context, w *Workspace, spec sandbox.Spec) (sandbox.Result, error) {
	spec.Workdir = w.Dir
	if spec.Stdout == nil {
		spec.Stdout = io.Discard
	}
	if spec.Stderr == nil {
		spec.Stderr = io.Discard
	}
	return e.box.Run(ctx, spec)
}

// Limits reports the engine's limits.
func (e *Engine) Limits() Limits { return e.limits }

func fileSum(root *os.Root, name string) ([32]byte, error) {
	var sum [32]byte
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return sum, errors.New("not a regular file")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
