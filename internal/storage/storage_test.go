package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// conformance runs the behaviour every Store must have against s.
func conformance(t *testing.T, s Store) {
	ctx := context.Background()
	sess := NewID()

	t.Run("put-open-stat", func(t *testing.T) {
		data := []byte("hello, world\n")
		key := Key{sess, NewID()}
		obj, err := s.Put(ctx, key, bytes.NewReader(data), Meta{Name: "dir/héllo wörld.txt", Owner: "t:u1"})
		if err != nil {
			t.Fatal(err)
		}
		if obj.Size != int64(len(data)) || obj.Name != "dir/héllo wörld.txt" || obj.Owner != "t:u1" {
			t.Fatalf("put: %+v", obj)
		}
		if !strings.HasPrefix(obj.ContentType, "text/plain") {
			t.Errorf("content type %q", obj.ContentType)
		}
		if time.Since(obj.Modified) > time.Minute || obj.Modified.After(time.Now().Add(time.Minute)) {
			t.Errorf("modified %v", obj.Modified)
		}
		rc, o2, err := s.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) || o2.Name != obj.Name {
			t.Fatalf("open: %q %+v", got, o2)
		}
	})

	t.Run("large-binary-stream", func(t *testing.T) {
		data := make([]byte, 9<<20+7)
		rand.Read(data)
		key := Key{sess, NewID()}
		if _, err := s.Put(ctx, key, bytes.NewReader(data), Meta{Name: "blob.bin", ReadOnly: true}); err != nil {
			t.Fatal(err)
		}
		rc, o, err := s.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) || !o.ReadOnly || o.Size != int64(len(data)) {
			t.Fatalf("roundtrip of %d bytes: got %d, ro=%v size=%d", len(data), len(got), o.ReadOnly, o.Size)
		}
	})

	t.Run("failed-put-publishes-nothing", func(t *testing.T) {
		key := Key{sess, NewID()}
		r := io.MultiReader(strings.NewReader("partial"), errReader{})
		if _, err := s.Put(ctx, key, r, Meta{Name: "x.txt"}); err == nil {
			t.Fatal("put of a failing reader succeeded")
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("half-written file visible: %v", err)
		}
	})

	t.Run("list-delete", func(t *testing.T) {
		other := NewID()
		var ids []string
		for i := 0; i < 3; i++ {
			k := Key{other, NewID()}
			if _, err := s.Put(ctx, k, strings.NewReader("x"), Meta{Name: "f.csv"}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, k.ID)
		}
		list, err := s.List(ctx, other)
		if err != nil || len(list) != 3 {
			t.Fatalf("list: %d %v", len(list), err)
		}
		for i := 1; i < len(list); i++ {
			if list[i-1].ID >= list[i].ID {
				t.Fatal("list not sorted by id")
			}
		}
		if err := s.Delete(ctx, Key{other, ids[0]}); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, Key{other, ids[0]}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		if list, _ := s.List(ctx, other); len(list) != 2 {
			t.Fatalf("after delete: %d", len(list))
		}
		if list, err := s.List(ctx, NewID()); err != nil || len(list) != 0 {
			t.Fatalf("unknown session: %v %v", list, err)
		}
	})

	t.Run("hostile-keys", func(t *testing.T) {
		for _, k := range []Key{{"..", "x"}, {sess, "../x"}, {sess, "a/b"}, {sess, "a.b"}, {"", "x"}, {sess, ""}, {sess, strings.Repeat("a", 65)}} {
			if _, err := s.Put(ctx, k, strings.NewReader("x"), Meta{}); err == nil {
				t.Errorf("put %+v accepted", k)
			}
			if _, err := s.Stat(ctx, k); !errors.Is(err, ErrNotFound) {
				t.Errorf("stat %+v: %v", k, err)
			}
		}
		if l, err := s.List(ctx, "../"+sess); err != nil || len(l) != 0 {
			t.Errorf("list traversal: %v %v", l, err)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		id := NewID()
		if _, _, err := s.GetSession(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown session: %v", err)
		}
		rec := SessionRecord{ID: id, Language: "py", Created: time.Now().UTC().Truncate(time.Second), Owner: "t:u"}
		if err := s.PutSession(ctx, rec); err != nil {
			t.Fatal(err)
		}
		got, mod, err := s.GetSession(ctx, id)
		if err != nil || got != rec || time.Since(mod) > time.Minute {
			t.Fatalf("get: %+v %v %v", got, mod, err)
		}
		k := Key{id, NewID()}
		if _, err := s.Put(ctx, k, strings.NewReader("x"), Meta{Name: "a.txt"}); err != nil {
			t.Fatal(err)
		}
		if l, _ := s.List(ctx, id); len(l) != 1 || l[0].ID != k.ID {
			t.Fatalf("the record is listed as a file: %+v", l)
		}
		if err := s.DeleteSession(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.GetSession(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("file outlived its session: %v", err)
		}
		if err := s.DeleteSession(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})

	t.Run("sweep-keeps-used-sessions", func(t *testing.T) {
		id := NewID()
		k := Key{id, NewID()}
		if _, err := s.Put(ctx, k, strings.NewReader("x"), Meta{Name: "a.txt"}); err != nil {
			t.Fatal(err)
		}
		// Backends keep modification times to the second.
		time.Sleep(1100 * time.Millisecond)
		cutoff := time.Now()
		time.Sleep(1100 * time.Millisecond)
		if err := s.PutSession(ctx, SessionRecord{ID: id, Language: "py"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sweep(ctx, cutoff); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, k); err != nil {
			t.Fatalf("a file of a session in use was swept: %v", err)
		}
		if _, err := s.Sweep(ctx, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.GetSession(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired session kept: %v", err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired file kept: %v", err)
		}
	})

	t.Run("sweep", func(t *testing.T) {
		k := Key{NewID(), NewID()}
		if _, err := s.Put(ctx, k, strings.NewReader("old"), Meta{Name: "old.txt"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sweep(ctx, time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, k); err != nil {
			t.Fatalf("fresh file swept: %v", err)
		}
		n, err := s.Sweep(ctx, time.Now().Add(time.Hour))
		if err != nil || n == 0 {
			t.Fatalf("sweep: %d %v", n, err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired file kept: %v", err)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conformance(t, s)
	// Nothing but the store's own files under its directory.
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if !ValidID(id) || len(id) != 21 || strings.ContainsAny(id, "./") || seen[id] {
			t.Fatalf("bad id %q", id)
		}
		seen[id] = true
	}
}
