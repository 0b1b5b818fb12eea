package engine

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/codeexec/codeexec/internal/lang"
	"github.com/codeexec/codeexec/internal/sandbox"
)

// CompileCache keeps compiled programs by content: the key hashes the
// language, the toolchain's version, the compile and run argv templates and
// the source, so the same program compiled by the same toolchain the same
// way is compiled once. Programs live in a root-only directory that no
// sandbox ever sees, bounded in total size with least-recently-used
// eviction. Safe for concurrent use.
type CompileCache struct {
	dir string
	max int64

	mu    sync.Mutex
	total int64
	lru   *list.List // of *cacheEntry, most recent first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key  string
	size int64
}

// OpenCompileCache makes (or empties) dir, mode 0700, for a cache of at
// most maxBytes. Entries do not survive a restart: a toolchain upgraded
// meanwhile never meets a stale program.
func OpenCompileCache(dir string, maxBytes int64) (*CompileCache, error) {
	if maxBytes <= 0 {
		return nil, errors.New("compile cache: size must be positive")
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("compile cache: %w", err)
	}
	return &CompileCache{dir: dir, max: maxBytes, lru: list.New(), byKey: map[string]*list.Element{}}, nil
}

func (c *CompileCache) path(key string) string { return filepath.Join(c.dir, key) }

// Get returns the program stored under key.
func (c *CompileCache) Get(key string) ([]byte, bool) {
	c.mu.Lock()
	el, ok := c.byKey[key]
	if ok {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(c.path(key))
	if err != nil {
		return nil, false
	}
	return b, true
}

// Put stores data under key, evicting the least recently used programs
// beyond the size bound. Programs larger than the bound are not kept.
func (c *CompileCache) Put(key string, data []byte) error {
	size := int64(len(data))
	if size > c.max {
		return nil
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), c.path(key)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.total -= el.Value.(*cacheEntry).size
		c.lru.Remove(el)
	}
	c.byKey[key] = c.lru.PushFront(&cacheEntry{key: key, size: size})
	c.total += size
	for c.total > c.max {
		el := c.lru.Back()
		e := el.Value.(*cacheEntry)
		c.lru.Remove(el)
		delete(c.byKey, e.key)
		c.total -= e.size
		_ = os.Remove(c.path(e.key))
	}
	return nil
}

// Stats reports the number of programs and their total size.
func (c *CompileCache) Stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byKey), c.total
}

// SetCompileCache makes the engine reuse compiled programs (nil: never).
func (e *Engine) SetCompileCache(c *CompileCache) { e.cache = c }

// stashPath is where the compile-only run leaves the program for the engine.
// A dot name: collection never picks it up.
const stashPath = lang.DataDir + "/.codeexec-program"

// cacheKey returns the cache key of a request, or "" when its program may
// not be cached: the language must compile to {bin} and run {bin}, the
// toolchain's version must be known, and the request must stage no files
// (a compile could include one, and the program would depend on it).
func (e *Engine) cacheKey(req Request) string {
	l := req.Lang
	if e.cache == nil || len(l.Compile) == 0 || len(l.Run) == 0 || l.Run[0] != "{bin}" || len(req.Files) > 0 {
		return ""
	}
	v := e.Version(l)
	if v == "" {
		return ""
	}
	h := sha256.New()
	for _, part := range []string{l.ID, v, strings.Join(l.Compile, "\x00"), strings.Join(l.Run, "\x00"), req.Code} {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// run runs a request's spec, through the compile cache when it applies:
// on a hit the compile step is skipped and the program is written into the
// sandbox; on a miss the program is compiled in a run of its own (before
// any code of the request runs, so nothing the program does can alter
// what is cached), stored, then run like a hit.
func (e *Engine) run(ctx context.Context, req Request, dir string, stdout, stderr *bytes.Buffer) (sandbox.Result, error) {
	spec := e.spec(req, dir)
	spec.Stdout, spec.Stderr = stdout, stderr
	key := e.cacheKey(req)
	if key == "" || len(spec.Steps) != 2 {
		return e.box.Run(ctx, spec)
	}
	var compiled sandbox.Result
	prog, hit := e.cache.Get(key)
	if !hit {
		cspec := spec
		cspec.Steps = []sandbox.Step{spec.Steps[0], {Name: "compile", Argv: []string{"/bin/cp", "--", lang.BuildDir + "/main", stashPath}}}
		res, err := e.box.Run(ctx, cspec)
		if err != nil || res.Status != sandbox.StatusOK {
			return res, err // a compile error is the request's answer, as without the cache
		}
		compiled = res
		if prog, err = readStash(dir, e.limits.CollectFileBytes); err != nil {
			e.log.Warn("compile cache: reading the program", "lang", req.Lang.ID, "err", err)
			stdout.Reset()
			stderr.Reset()
			return e.box.Run(ctx, spec)
		}
		if err := e.cache.Put(key, prog); err != nil {
			e.log.Warn("compile cache: storing the program", "err", err)
		}
	}
	rspec := spec
	rspec.Steps = spec.Steps[1:]
	rspec.Files = append(append([]sandbox.File{}, spec.Files...), sandbox.File{Path: lang.BuildDir + "/main", Data: prog, Mode: 0o755})
	if ct := spec.Steps[0].Timeout; ct > 0 && rspec.Limits.WallTime > ct {
		rspec.Limits.WallTime -= ct // the compile allowance spec() added
	}
	res, err := e.box.Run(ctx, rspec)
	res.WallTime += compiled.WallTime
	res.CPUTime += compiled.CPUTime
	res.MemoryPeak = max(res.MemoryPeak, compiled.MemoryPeak)
	return res, err
}

// readStash takes the program the compile-only run left in the workdir. It
// is opened without following links and must be a regular file.
func readStash(dir string, limit int64) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	name := filepath.Base(stashPath)
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.New("program larger than the file limit")
	}
	return b, root.Remove(name)
}
