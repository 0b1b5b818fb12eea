package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestCompileCacheLRU(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cc")
	c, err := OpenCompileCache(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir mode: %v %v", fi, err)
	}
	c.Put("a", []byte("aaaa"))
	c.Put("b", []byte("bbbb"))
	if _, ok := c.Get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.Put("c", []byte("cccc")) // 12 bytes > 10: b goes
	if _, ok := c.Get("b"); ok {
		t.Fatal("b should have been evicted")
	}
	if got, ok := c.Get("a"); !ok || !bytes.Equal(got, []byte("aaaa")) {
		t.Fatalf("a: %q %v", got, ok)
	}
	if n, size := c.Stats(); n != 2 || size != 8 {
		t.Fatalf("stats %d %d", n, size)
	}
	c.Put("huge", make([]byte, 11)) // larger than the bound: not kept
	if _, ok := c.Get("huge"); ok {
		t.Fatal("oversized entry kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "b")); !os.IsNotExist(err) {
		t.Fatalf("evicted file still on disk: %v", err)
	}
}
