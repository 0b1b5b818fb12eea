package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"
)

// Blob is a Store over a gocloud.dev bucket. Objects are named
// "<session>/<id>"; the file's name and flags travel as object metadata.
type Blob struct {
	b *blob.Bucket
	// dir and minFree: the local backend refuses writes that would leave
	// less than minFree bytes free on dir's file system.
	dir     string
	minFree int64
}

// NewBlob wraps an open bucket; Close closes it.
func NewBlob(b *blob.Bucket) *Blob { return &Blob{b: b} }

// OpenLocal opens the local-disk backend rooted at dir. Writes go to a
// temporary file next to the target and are renamed into place, so a crash
// never leaves a half-written file visible.
func OpenLocal(dir string) (*Blob, error) { return OpenLocalWith(dir, 0) }

// OpenLocalWith is OpenLocal keeping at least minFree bytes free on dir's
// file system: a write that would go below is refused with a *QuotaError
// (reason "disk"), and what it wrote is discarded.
func OpenLocalWith(dir string, minFree int64) (*Blob, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage dir: %w", err)
	}
	b, err := fileblob.OpenBucket(dir, &fileblob.Options{NoTempDir: true, DirFileMode: 0o700})
	if err != nil {
		return nil, fmt.Errorf("storage dir: %w", err)
	}
	s := NewBlob(b)
	s.dir, s.minFree = dir, minFree
	return s, nil
}

const (
	metaName  = "name"
	metaRO    = "read-only"
	metaOwner = "owner"
)

func objectKey(k Key) string { return k.Session + "/" + k.ID }

func notFound(err error) error {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return ErrNotFound
	}
	return err
}

// ContentType guesses a file's media type from its name.
func ContentType(name string) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func (s *Blob) Put(ctx context.Context, key Key, r io.Reader, meta Meta) (Object, error) {
	if !ValidID(key.Session) || !ValidID(key.ID) {
		return Object{}, fmt.Errorf("invalid key %q", objectKey(key))
	}
	if meta.ContentType == "" {
		meta.ContentType = ContentType(meta.Name)
	}
	md := map[string]string{metaName: url.PathEscape(meta.Name)}
	if meta.ReadOnly {
		md[metaRO] = "true"
	}
	if meta.Owner != "" {
		md[metaOwner] = url.PathEscape(meta.Owner)
	}
	// Cancelling the writer's context aborts the write: the partial object
	// is discarded, never published.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.minFree > 0 {
		r = &floorReader{r: r, dir: s.dir, floor: s.minFree}
	}
	w, err := s.b.NewWriter(wctx, objectKey(key), &blob.WriterOptions{ContentType: meta.ContentType, Metadata: md, BufferSize: uploadPartSize, MaxConcurrency: uploadConcurrency})
	if err != nil {
		return Object{}, err
	}
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		w.Close()
		return Object{}, err
	}
	if err := w.Close(); err != nil {
		return Object{}, err
	}
	return s.Stat(ctx, key)
}

func (s *Blob) Open(ctx context.Context, key Key) (io.ReadCloser, Object, error) {
	if !ValidID(key.Session) || !ValidID(key.ID) {
		return nil, Object{}, ErrNotFound
	}
	r, err := s.b.NewReader(ctx, objectKey(key), nil)
	if err != nil {
		return nil, Object{}, notFound(err)
	}
	o, err := s.Stat(ctx, key)
	if err != nil {
		r.Close()
		return nil, Object{}, err
	}
	return r, o, nil
}

func (s *Blob) Stat(ctx context.Context, key Key) (Object, error) {
	if !ValidID(key.Session) || !ValidID(key.ID) {
		return Object{}, ErrNotFound
	}
	a, err := s.b.Attributes(ctx, objectKey(key))
	if err != nil {
		return Object{}, notFound(err)
	}
	return objectFrom(key, a.Size, a.ModTime, a.ETag, a.ContentType, a.Metadata), nil
}

func objectFrom(key Key, size int64, mod time.Time, etag, ctype string, md map[string]string) Object {
	name, err := url.PathUnescape(md[metaName])
	if err != nil {
		name = md[metaName]
	}
	owner, err := url.PathUnescape(md[metaOwner])
	if err != nil {
		owner = md[metaOwner]
	}
	return Object{
		Key:      key,
		Meta:     Meta{Name: name, ContentType: ctype, ReadOnly: md[metaRO] == "true", Owner: owner},
		Size:     size,
		Modified: mod.UTC(),
		ETag:     strings.Trim(etag, `"`),
	}
}

func (s *Blob) List(ctx context.Context, session string) ([]Object, error) {
	if !ValidID(session) {
		return nil, nil
	}
	var out []Object
	it := s.b.List(&blob.ListOptions{Prefix: session + "/"})
	for {
		lo, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		id := strings.TrimPrefix(lo.Key, session+"/")
		if lo.IsDir || !ValidID(id) { // temporary files of interrupted writes
			continue
		}
		// Listing does not carry metadata on every backend; ask for it.
		o, err := s.Stat(ctx, Key{session, id})
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Blob) Delete(ctx context.Context, key Key) error {
	if !ValidID(key.Session) || !ValidID(key.ID) {
		return ErrNotFound
	}
	return notFound(s.b.Delete(ctx, objectKey(key)))
}

func (s *Blob) Sweep(ctx context.Context, cutoff time.Time) (int, error) {
	// One listing: the records say which sessions are still in use.
	var old []*blob.ListObject
	live := map[string]bool{}
	it := s.b.List(nil)
	for {
		lo, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		if lo.IsDir {
			continue
		}
		if !lo.ModTime.Before(cutoff) {
			if sid, name, _ := strings.Cut(lo.Key, "/"); name == recordName {
				live[sid] = true
			}
			continue
		}
		old = append(old, lo)
	}
	n := 0
	for _, lo := range old {
		if sid, _, _ := strings.Cut(lo.Key, "/"); live[sid] {
			continue
		}
		if err := s.b.Delete(ctx, lo.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return n, err
		}
		n++
	}
	return n, nil
}

// recordName is the object of a session's record: ids never contain '.',
// so no file can be named like it, and List skips it.
const recordName = ".session"

func (s *Blob) PutSession(ctx context.Context, rec SessionRecord) error {
	if !ValidID(rec.ID) {
		return fmt.Errorf("invalid session id %q", rec.ID)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.b.WriteAll(ctx, rec.ID+"/"+recordName, b, &blob.WriterOptions{ContentType: "application/json"})
}

func (s *Blob) GetSession(ctx context.Context, id string) (SessionRecord, time.Time, error) {
	var rec SessionRecord
	if !ValidID(id) {
		return rec, time.Time{}, ErrNotFound
	}
	key := id + "/" + recordName
	a, err := s.b.Attributes(ctx, key)
	if err != nil {
		return rec, time.Time{}, notFound(err)
	}
	b, err := s.b.ReadAll(ctx, key)
	if err != nil {
		return rec, time.Time{}, notFound(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, time.Time{}, fmt.Errorf("session record %s: %w", id, err)
	}
	return rec, a.ModTime.UTC(), nil
}

func (s *Blob) DeleteSession(ctx context.Context, id string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	found := false
	it := s.b.List(&blob.ListOptions{Prefix: id + "/"})
	for {
		lo, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if lo.IsDir {
			continue
		}
		if err := s.b.Delete(ctx, lo.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return err
		}
		found = true
	}
	if !found {
		return ErrNotFound
	}
	return nil
}

func (s *Blob) Close() error { return s.b.Close() }

// Walk calls fn with every file of every session (session records
// excluded).
func (s *Blob) Walk(ctx context.Context, fn func(Object) error) error {
	it := s.b.List(nil)
	for {
		lo, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		sid, id, _ := strings.Cut(lo.Key, "/")
		if lo.IsDir || !ValidID(sid) || !ValidID(id) {
			continue
		}
		o, err := s.Stat(ctx, Key{sid, id})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
}

// floorReader fails a write once the disk's free space, less what is read
// but not yet checked, would fall below floor. It asks the file system
// before the first byte and then every floorCheck bytes.
type floorReader struct {
	r       io.Reader
	dir     string
	floor   int64
	unknown int64 // bytes read since the last check
	checked bool
}

const floorCheck = 4 << 20

func (f *floorReader) Read(p []byte) (int, error) {
	if !f.checked || f.unknown >= floorCheck {
		if err := f.check(); err != nil {
			return 0, err
		}
		f.checked, f.unknown = true, 0
	}
	if len(p) > floorCheck {
		p = p[:floorCheck]
	}
	n, err := f.r.Read(p)
	f.unknown += int64(n)
	return n, err
}

func (f *floorReader) check() error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.dir, &st); err != nil {
		return fmt.Errorf("storage dir: %w", err)
	}
	if int64(st.Bavail)*int64(st.Bsize)-floorCheck < f.floor {
		return &QuotaError{Reason: "disk", Limit: f.floor}
	}
	return nil
}
