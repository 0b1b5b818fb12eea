// Package storage keeps session files: uploads and the files executions
// produce, keyed by (session id, file id). Store is the boundary; Blob
// implements it over any gocloud.dev bucket (local disk, S3, GCS, memory
// for tests). It keeps an object's owner but must not decide who may read
// it: the API does.
package storage

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned for a session or file that does not exist.
var ErrNotFound = errors.New("not found")

// Key names one stored file.
type Key struct {
	Session string
	ID      string
}

// Meta is what the server records about a file besides its bytes.
type Meta struct {
	// Name is the file's path relative to /mnt/data ("out.png", "sub/x.csv").
	Name        string
	ContentType string
	ReadOnly    bool
	// Owner scopes access: the credential principal that stored the file
	// ("" when the server has a single shared key or no auth).
	Owner string
}

// Object is a stored file's description.
type Object struct {
	Key
	Meta
	Size     int64
	Modified time.Time
	ETag     string
}

// Store keeps files. Implementations stream: Put reads r to the end without
// holding it in memory, Open returns a reader over the stored bytes.
type Store interface {
	// Put stores r under key, replacing any previous file, atomically:
	// readers see the old file or the whole new one, never a part.
	Put(ctx context.Context, key Key, r io.Reader, meta Meta) (Object, error)
	// Open returns the file's bytes and description, or ErrNotFound.
	Open(ctx context.Context, key Key) (io.ReadCloser, Object, error)
	// Stat describes the file, or returns ErrNotFound.
	Stat(ctx context.Context, key Key) (Object, error)
	// List describes every file of a session, sorted by ID; an unknown
	// session has none.
	List(ctx context.Context, session string) ([]Object, error)
	// Delete removes a file, or returns ErrNotFound.
	Delete(ctx context.Context, key Key) error
	// Sweep deletes every file last modified before cutoff, except files
	// of sessions whose record (PutSession) is newer, and returns how many
	// objects it deleted.
	Sweep(ctx context.Context, cutoff time.Time) (int, error)

	// PutSession writes a session's record, refreshing its modification
	// time: a used session is kept whole by Sweep.
	PutSession(ctx context.Context, rec SessionRecord) error
	// GetSession reads a session's record, or returns ErrNotFound.
	GetSession(ctx context.Context, id string) (SessionRecord, time.Time, error)
	// DeleteSession removes a session's record and every file of it.
	DeleteSession(ctx context.Context, id string) error
	Close() error
}

// SessionRecord describes a session of the /v1/sessions API.
type SessionRecord struct {
	ID       string    `json:"id"`
	Language string    `json:"language"`
	Created  time.Time `json:"created"`
	Owner    string    `json:"owner,omitempty"`
	Stateful bool      `json:"stateful,omitempty"`
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

// NewID returns a fresh random id: 21 URL-safe characters without '.' or
// '/', as LibreChat's legacy client parses ids out of "<session>/<id>.ext".
func NewID() string {
	var b [21]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[b[i]&63]
	}
	return string(b[:])
}

// ValidID reports whether s can be a session or file id: 1-64 characters
// of [A-Za-z0-9_-]. Everything reaching a storage key passes this check.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
