package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/codeexec/codeexec/internal/owner"
)

// ErrQuota is wrapped by every QuotaError.
var ErrQuota = errors.New("storage quota exceeded")

// QuotaError says why a write was refused: Reason is "owner" (the owner's
// quota is full), "total" (the store's) or "disk" (the local disk is at
// its free-space floor).
type QuotaError struct {
	Reason string
	Limit  int64
}

func (e *QuotaError) Error() string {
	switch e.Reason {
	case "owner":
		return fmt.Sprintf("storage quota exceeded: this caller's files may take at most %d bytes", e.Limit)
	case "total":
		return fmt.Sprintf("storage quota exceeded: the server's files may take at most %d bytes", e.Limit)
	}
	return fmt.Sprintf("storage full: writing would leave less than %d bytes free", e.Limit)
}

func (e *QuotaError) Unwrap() error { return ErrQuota }

// Walker is a Store that can describe every file it holds.
type Walker interface {
	Walk(ctx context.Context, fn func(Object) error) error
}

// QuotaConfig bounds a Quota; a zero limit is no limit.
type QuotaConfig struct {
	PerOwner int64 // bytes of files one owner may keep
	Total    int64 // bytes of all files
	// Refused is told each refused write's reason (for a metric).
	Refused func(reason string)
}

// Quota is a Store that bounds the bytes each owner (Meta.Owner, charged
// to the principal that pays for it: owner.Payer) and
// everyone together keep. Sizes are counted as bytes pass through Put, so a
// write is cut off the moment it would cross a limit, not after; concurrent
// writes reserve what they have written so far. Usage is kept in memory,
// rebuilt from the store at start and after each Sweep: files written by
// other replicas sharing a bucket are counted from the next Sweep on.
type Quota struct {
	Store
	cfg QuotaConfig

	mu       sync.Mutex
	files    map[string]map[string]usage // session -> id -> usage
	byOwner  map[string]int64            // stored and in-flight bytes
	total    int64
	rescanMu sync.Mutex
}

type usage struct {
	owner string
	size  int64
}

// NewQuota wraps s. Call Rescan to count what s already holds.
func NewQuota(s Store, cfg QuotaConfig) *Quota {
	return &Quota{Store: s, cfg: cfg, files: map[string]map[string]usage{}, byOwner: map[string]int64{}}
}

// Limits returns the quota's configuration.
func (q *Quota) Limits() QuotaConfig {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cfg
}

// SetLimits changes the limits (0: none); what is stored stays.
func (q *Quota) SetLimits(perOwner, total int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cfg.PerOwner, q.cfg.Total = perOwner, total
}

// Used returns the bytes stored (and being written) in all.
func (q *Quota) Used() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}

// UsedBy returns the bytes owner stores (and is writing).
func (q *Quota) UsedBy(o string) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.byOwner[owner.Payer(o)]
}

// Rescan recounts usage from the store, when it can walk its files.
func (q *Quota) Rescan(ctx context.Context) error {
	w, ok := q.Store.(Walker)
	if !ok {
		return nil
	}
	q.rescanMu.Lock()
	defer q.rescanMu.Unlock()
	files := map[string]map[string]usage{}
	err := w.Walk(ctx, func(o Object) error {
		if files[o.Session] == nil {
			files[o.Session] = map[string]usage{}
		}
		files[o.Session][o.ID] = usage{o.Owner, o.Size}
		return nil
	})
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	// Writes in flight keep their reservations: only stored files are
	// replaced by what the walk found.
	for _, ids := range q.files {
		for _, u := range ids {
			q.add(u.owner, -u.size)
		}
	}
	q.files = files
	for _, ids := range files {
		for _, u := range ids {
			q.add(u.owner, u.size)
		}
	}
	return nil
}

func (q *Quota) add(o string, n int64) {
	q.total += n
	p := owner.Payer(o) // a file its tenant shares is its uploader's
	if q.byOwner[p] += n; q.byOwner[p] == 0 {
		delete(q.byOwner, p)
	}
}

// reserve counts n more bytes for owner, or refuses them.
func (q *Quota) reserve(o string, n int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cfg.PerOwner > 0 && o != "" && q.byOwner[owner.Payer(o)]+n > q.cfg.PerOwner {
		return &QuotaError{Reason: "owner", Limit: q.cfg.PerOwner}
	}
	if q.cfg.Total > 0 && q.total+n > q.cfg.Total {
		return &QuotaError{Reason: "total", Limit: q.cfg.Total}
	}
	q.add(o, n)
	return nil
}

func (q *Quota) refused(err error) {
	var qe *QuotaError
	if errors.As(err, &qe) && q.cfg.Refused != nil {
		q.cfg.Refused(qe.Reason)
	}
}

// Put stores r unless its bytes would take the owner or the store past its
// quota; then nothing is stored and a *QuotaError is returned.
func (q *Quota) Put(ctx context.Context, key Key, r io.Reader, meta Meta) (Object, error) {
	qr := &quotaReader{q: q, owner: meta.Owner, r: r}
	obj, err := q.Store.Put(ctx, key, qr, meta)
	q.mu.Lock()
	q.add(meta.Owner, -qr.n) // the reservation becomes the stored size
	if err == nil {
		ids := q.files[key.Session]
		if ids == nil {
			ids = map[string]usage{}
			q.files[key.Session] = ids
		}
		if old, ok := ids[key.ID]; ok {
			q.add(old.owner, -old.size)
		}
		ids[key.ID] = usage{obj.Owner, obj.Size}
		q.add(obj.Owner, obj.Size)
	}
	q.mu.Unlock()
	if qr.err != nil {
		q.refused(qr.err)
		return Object{}, qr.err
	}
	if err != nil {
		q.refused(err)
	}
	return obj, err
}

type quotaReader struct {
	q     *Quota
	owner string
	r     io.Reader
	n     int64
	err   error
}

func (r *quotaReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if qerr := r.q.reserve(r.owner, int64(n)); qerr != nil {
			r.err = qerr
			return 0, qerr
		}
		r.n += int64(n)
	}
	return n, err
}

func (q *Quota) forget(key Key) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if u, ok := q.files[key.Session][key.ID]; ok {
		q.add(u.owner, -u.size)
		delete(q.files[key.Session], key.ID)
		if len(q.files[key.Session]) == 0 {
			delete(q.files, key.Session)
		}
	}
}

// Delete removes a file and its bytes from its owner's usage.
func (q *Quota) Delete(ctx context.Context, key Key) error {
	err := q.Store.Delete(ctx, key)
	if err == nil || errors.Is(err, ErrNotFound) {
		q.forget(key)
	}
	return err
}

// DeleteSession removes a session and its bytes from the usage.
func (q *Quota) DeleteSession(ctx context.Context, id string) error {
	err := q.Store.DeleteSession(ctx, id)
	if err == nil || errors.Is(err, ErrNotFound) {
		q.mu.Lock()
		for _, u := range q.files[id] {
			q.add(u.owner, -u.size)
		}
		delete(q.files, id)
		q.mu.Unlock()
	}
	return err
}

// Sweep deletes expired files and recounts the usage.
func (q *Quota) Sweep(ctx context.Context, cutoff time.Time) (int, error) {
	n, err := q.Store.Sweep(ctx, cutoff)
	if err != nil {
		return n, err
	}
	return n, q.Rescan(ctx)
}
