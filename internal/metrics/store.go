package metrics

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/codeexec/codeexec/internal/storage"
)

// Store counts the bytes written to s and the operations that failed.
func (m *Metrics) Store(s storage.Store) storage.Store { return &countingStore{Store: s, m: m} }

type countingStore struct {
	storage.Store
	m *Metrics
}

// failed counts err unless it is an ordinary "not found" answer.
func (c *countingStore) failed(err error) error {
	if err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, context.Canceled) {
		c.m.StorageErrors.Inc()
	}
	return err
}

func (c *countingStore) Put(ctx context.Context, k storage.Key, r io.Reader, meta storage.Meta) (storage.Object, error) {
	o, err := c.Store.Put(ctx, k, r, meta)
	if err == nil {
		c.m.BytesStored.Add(float64(o.Size))
	}
	return o, c.failed(err)
}

func (c *countingStore) Open(ctx context.Context, k storage.Key) (io.ReadCloser, storage.Object, error) {
	rc, o, err := c.Store.Open(ctx, k)
	return rc, o, c.failed(err)
}

func (c *countingStore) Stat(ctx context.Context, k storage.Key) (storage.Object, error) {
	o, err := c.Store.Stat(ctx, k)
	return o, c.failed(err)
}

func (c *countingStore) List(ctx context.Context, session string) ([]storage.Object, error) {
	l, err := c.Store.List(ctx, session)
	return l, c.failed(err)
}

func (c *countingStore) Delete(ctx context.Context, k storage.Key) error {
	return c.failed(c.Store.Delete(ctx, k))
}

func (c *countingStore) Sweep(ctx context.Context, cutoff time.Time) (int, error) {
	n, err := c.Store.Sweep(ctx, cutoff)
	return n, c.failed(err)
}

func (c *countingStore) PutSession(ctx context.Context, rec storage.SessionRecord) error {
	return c.failed(c.Store.PutSession(ctx, rec))
}

func (c *countingStore) GetSession(ctx context.Context, id string) (storage.SessionRecord, time.Time, error) {
	rec, t, err := c.Store.GetSession(ctx, id)
	return rec, t, c.failed(err)
}

func (c *countingStore) DeleteSession(ctx context.Context, id string) error {
	return c.failed(c.Store.DeleteSession(ctx, id))
}
