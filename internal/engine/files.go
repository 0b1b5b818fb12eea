package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/codeexec/codeexec/internal/owner"
	"github.com/codeexec/codeexec/internal/storage"
)

// Caps on names, as the official service has them.
const (
	MaxNameLen   = 256
	MaxNameDepth = 10
	maxSkipped   = 20
)

// CleanName validates a file name relative to /mnt/data ("a.csv",
// "dir/b.txt") and returns it unchanged, or an ErrInvalid error. Absolute
// names, "." and ".." segments, empty segments, control characters and
// over-long or over-deep names are refused rather than repaired: a
// surprising name is an attack more often than a typo.
func CleanName(name string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: file name %q: %s", ErrInvalid, truncate(name, 80), why)
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxNameLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxNameLen))
	case !utf8.ValidString(name):
		return bad("not UTF-8")
	case strings.HasPrefix(name, "/"):
		return bad("absolute paths are not allowed")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return bad("control characters and backslashes are not allowed")
		}
	}
	segs := strings.Split(name, "/")
	if len(segs) > MaxNameDepth {
		return bad(fmt.Sprintf("deeper than %d directories", MaxNameDepth))
	}
	for _, s := range segs {
		switch s {
		case "":
			return bad("empty path segment")
		case ".", "..":
			return bad("'.' and '..' are not allowed")
		}
	}
	return name, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// input is a resolved file ref.
type input struct {
	ref      FileRef
	obj      storage.Object
	size     int64
	sum      [32]byte
	readOnly bool
}

// resolve validates the request's refs and looks each one up. The last ref
// for a name wins, as LibreChat's client expects.
func (e *Engine) resolve(ctx context.Context, req Request) ([]*input, error) {
	if len(req.Files) > e.limits.MaxInputFiles {
		return nil, fmt.Errorf("%w: %d files referenced, at most %d allowed", ErrInvalid, len(req.Files), e.limits.MaxInputFiles)
	}
	byName := map[string]int{}
	var out []*input
	for _, f := range req.Files {
		name, err := CleanName(f.Name)
		if err != nil {
			return nil, err
		}
		if !storage.ValidID(f.Session) || !storage.ValidID(f.ID) {
			return nil, fmt.Errorf("%w: file %q: session and id must be 1-64 characters of [A-Za-z0-9_-]", ErrInvalid, truncate(name, 80))
		}
		obj, err := e.store.Stat(ctx, storage.Key{Session: f.Session, ID: f.ID})
		if errors.Is(err, storage.ErrNotFound) || err == nil && !owner.Readable(obj.Owner, req.Owner) {
			return nil, fmt.Errorf("%w: %s/%s", ErrUnauthorized, f.Session, f.ID)
		}
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		in := &input{ref: FileRef{Session: f.Session, ID: f.ID, Name: name}, obj: obj, readOnly: obj.ReadOnly}
		if i, ok := byName[name]; ok {
			out[i] = in
			continue
		}
		byName[name] = len(out)
		out = append(out, in)
	}
	// A name that is both a file and another's directory cannot be staged.
	for _, in := range out {
		for d := path.Dir(in.ref.Name); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; ok {
				return nil, fmt.Errorf("%w: %q is both a file and a directory", ErrInvalid, d)
			}
		}
	}
	return out, nil
}

// stage streams every input into the working directory, recording its
// size and hash so collection can tell changed files from unchanged ones.
func (e *Engine) stage(ctx context.Context, dir string, inputs []*input) (map[string]*input, error) {
	staged := make(map[string]*input, len(inputs))
	if len(inputs) == 0 {
		return staged, nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	for _, in := range inputs {
		if d := path.Dir(in.ref.Name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("staging %q: %w", in.ref.Name, err)
			}
		}
		if err := e.stageOne(ctx, root, in); err != nil {
			return nil, err
		}
		staged[in.ref.Name] = in
	}
	return staged, nil
}

func (e *Engine) stageOne(ctx context.Context, root *os.Root, in *input) error {
	r, _, err := e.store.Open(ctx, storage.Key{Session: in.ref.Session, ID: in.ref.ID})
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s/%s", ErrUnauthorized, in.ref.Session, in.ref.ID)
	}
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer r.Close()
	mode := os.FileMode(0o644)
	if in.readOnly {
		mode = 0o444
	}
	f, err := root.OpenFile(in.ref.Name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return fmt.Errorf("staging %q: %w", in.ref.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("%w: the input files do not fit in the %d MB working directory", ErrInvalid, e.limits.DiskBytes>>20)
	}
	if err != nil {
		return fmt.Errorf("staging %q: %w", in.ref.Name, err)
	}
	in.size = n
	copy(in.sum[:], h.Sum(nil))
	return nil
}

// found is a regular file seen in the working directory after the run.
type found struct {
	name  string
	size  int64
	input *input // the input of the same name, if any
}

// collect walks the working directory without following symlinks, stores
// new and changed files under session and fills res.Files, DeletedFiles and
// Truncation.
func (e *Engine) collect(ctx context.Context, dir, session, owner string, staged map[string]*input, res *Result) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	trunc := &Truncation{Reasons: map[string]int{}}
	skip := func(reason, name string) {
		trunc.Reasons[reason]++
		trunc.Count++
		if len(trunc.Skipped) < maxSkipped {
			trunc.Skipped = append(trunc.Skipped, name)
		}
	}
	complete := true
	seen := map[string]bool{}
	var generated, inherited []found
	err = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			complete = false
			skip("unreadable", name)
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if name == "." {
			return nil
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir // .git, .cache, .ipynb_checkpoints
			}
			if strings.Count(name, "/")+1 >= MaxNameDepth {
				skip("depth", name)
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // symlinks, fifos, sockets, devices: never followed or read
		}
		info, err := d.Info()
		if err != nil {
			skip("unreadable", name)
			return nil
		}
		seen[name] = true
		in := staged[name]
		f := found{name: name, size: info.Size(), input: in}
		switch {
		case !validOutputName(name):
			// Held to the rules of input names: a name with a newline,
			// an escape sequence or a backslash would reach LibreChat,
			// its users' terminals and file systems. Reported quoted.
			skip("path", quoteName(name))
		case in != nil && (in.readOnly || in.size == f.size && sameHash(root, name, in.sum)):
			inherited = append(inherited, f)
		case f.size > e.limits.CollectFileBytes:
			skip("size", name)
		default:
			generated = append(generated, f)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("collecting files: %w", err)
	}

	res.Files = []OutFile{}
	budget := e.limits.MaxOutputFiles
	bytesLeft := e.limits.CollectTotalBytes
	if bytesLeft <= 0 {
		bytesLeft = e.limits.DiskBytes
	}
	for _, f := range generated {
		if budget == 0 {
			skip("max_files", f.name)
			continue
		}
		// Holes cost the run nothing in its tmpfs but are stored as
		// zeros: the budget counts what is read and stored.
		if f.size > bytesLeft {
			skip("total_size", f.name)
			continue
		}
		out, err := e.storeOutput(ctx, root, session, owner, f, bytesLeft)
		if err != nil {
			if errors.Is(err, errUnreadable) {
				skip("unreadable", f.name)
				continue
			}
			if errors.Is(err, errOverBudget) {
				skip("total_size", f.name)
				continue
			}
			if errors.Is(err, storage.ErrQuota) {
				// The caller's (or the server's) storage is full: the
				// run's answer says which files were not kept.
				skip("quota", f.name)
				continue
			}
			return err
		}
		res.Files = append(res.Files, out)
		bytesLeft -= out.Size
		budget--
	}
	for _, f := range inherited {
		if budget == 0 {
			skip("max_files", f.name)
			continue
		}
		res.Files = append(res.Files, OutFile{
			ID: f.input.ref.ID, Name: f.name, Session: f.input.ref.Session,
			Size: f.size, ContentType: f.input.obj.ContentType, Inherited: true,
		})
		budget--
	}
	if complete {
		for name := range staged {
			if !seen[name] {
				res.DeletedFiles = append(res.DeletedFiles, name)
			}
		}
		sort.Strings(res.DeletedFiles)
	}
	if trunc.Count > 0 {
		res.Truncation = trunc
	}
	return nil
}

// validOutputName reports whether a produced file's name passes CleanName
// (a directory name counts too: every segment of the path is checked).
func validOutputName(name string) bool {
	_, err := CleanName(name)
	return err == nil
}

// quoteName spells a refused name in printable ASCII, bounded.
func quoteName(name string) string {
	q := strconv.QuoteToASCII(truncate(name, 200))
	return q[1 : len(q)-1]
}

var (
	errUnreadable = errors.New("unreadable")
	errOverBudget = errors.New("over the run's output budget")
)

// storeOutput uploads one generated or changed file, of at most left
// bytes (what it stored is deleted again if it read more).
func (e *Engine) storeOutput(ctx context.Context, root *os.Root, session, owner string, f found, left int64) (OutFile, error) {
	file, err := root.OpenFile(f.name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return OutFile{}, errUnreadable
	}
	defer file.Close()
	if st, err := file.Stat(); err != nil || !st.Mode().IsRegular() {
		return OutFile{}, errUnreadable
	}
	key := storage.Key{Session: session, ID: storage.NewID()}
	// The sandbox is gone, but bound the read anyway: the size was checked
	// when the file was listed.
	limit := min(e.limits.CollectFileBytes, left)
	obj, err := e.store.Put(ctx, key, io.LimitReader(file, limit+1), storage.Meta{Name: f.name, Owner: owner})
	if err != nil {
		return OutFile{}, fmt.Errorf("storing %q: %w", f.name, err)
	}
	if obj.Size > limit {
		if err := e.store.Delete(ctx, key); err != nil {
			return OutFile{}, fmt.Errorf("removing %q: %w", f.name, err)
		}
		return OutFile{}, errOverBudget
	}
	out := OutFile{ID: key.ID, Name: f.name, Session: session, Size: obj.Size, ContentType: obj.ContentType}
	if f.input != nil {
		out.ModifiedFrom = &storage.Key{Session: f.input.ref.Session, ID: f.input.ref.ID}
	}
	return out, nil
}

// sameHash reports whether the file's content hashes to sum.
func sameHash(root *os.Root, name string, sum [32]byte) bool {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	var got [32]byte
	copy(got[:], h.Sum(nil))
	return got == sum
}

// supersede removes from session the inputs that res replaced or deleted.
func (e *Engine) supersede(ctx context.Context, session string, staged map[string]*input, res *Result) error {
	var gone []storage.Key
	for _, f := range res.Files {
		if m := f.ModifiedFrom; m != nil && m.Session == session {
			gone = append(gone, *m)
		}
	}
	for _, name := range res.DeletedFiles {
		if in := staged[name]; in != nil && in.ref.Session == session {
			gone = append(gone, storage.Key{Session: session, ID: in.ref.ID})
		}
	}
	for _, k := range gone {
		if err := e.store.Delete(ctx, k); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("storage: %w", err)
		}
	}
	return nil
}
