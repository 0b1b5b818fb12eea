package storage

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestQuota(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A file stored before the quota wrapper existed is counted by Rescan.
	if _, err := b.Put(ctx, Key{"s0", "old"}, strings.NewReader(strings.Repeat("o", 300)), Meta{Name: "o", Owner: "a"}); err != nil {
		t.Fatal(err)
	}
	var refusals []string
	var mu sync.Mutex
	q := NewQuota(b, QuotaConfig{PerOwner: 1000, Total: 1500, Refused: func(r string) { mu.Lock(); refusals = append(refusals, r); mu.Unlock() }})
	if err := q.Rescan(ctx); err != nil {
		t.Fatal(err)
	}
	if q.UsedBy("a") != 300 || q.Used() != 300 {
		t.Fatalf("rescan: a %d, total %d", q.UsedBy("a"), q.Used())
	}
	put := func(owner, id string, n int) error {
		_, err := q.Put(ctx, Key{"s1", id}, bytes.NewReader(make([]byte, n)), Meta{Name: id, Owner: owner})
		return err
	}
	if err := put("a", "f1", 700); err != nil {
		t.Fatal(err)
	}
	// One byte more than a's quota: refused, nothing stored, nothing counted.
	err = put("a", "f2", 1)
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Reason != "owner" || !errors.Is(err, ErrQuota) {
		t.Fatalf("over a's quota: %v", err)
	}
	if _, err := q.Stat(ctx, Key{"s1", "f2"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused file stored: %v", err)
	}
	if q.UsedBy("a") != 1000 {
		t.Fatalf("a uses %d", q.UsedBy("a"))
	}
	// b has its own quota, but the total is 1500.
	if err := put("b", "g1", 500); err != nil {
		t.Fatal(err)
	}
	if err := put("b", "g2", 1); !errors.As(err, &qe) || qe.Reason != "total" {
		t.Fatalf("over the total: %v", err)
	}
	// Deleting frees; a replaced file counts until the new one is stored,
	// then only the new one does.
	if err := q.Delete(ctx, Key{"s1", "f1"}); err != nil {
		t.Fatal(err)
	}
	if err := put("a", "f3", 600); err != nil {
		t.Fatal(err)
	}
	if err := put("a", "f3", 50); err != nil || q.UsedBy("a") != 350 {
		t.Fatalf("replace: %v, a uses %d", err, q.UsedBy("a"))
	}
	if err := q.DeleteSession(ctx, "s1"); err != nil || q.Used() != 300 {
		t.Fatalf("delete session: %v, total %d", err, q.Used())
	}
	// Concurrent writers cannot each take the last room.
	q.SetLimits(1000, 0)
	var wg sync.WaitGroup
	ok := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if put("c", string(rune('A'+i)), 400) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 2 || q.UsedBy("c") != 800 {
		t.Fatalf("concurrent writers: %d stored, c uses %d", ok, q.UsedBy("c"))
	}
	if len(refusals) != 2+6 || refusals[0] != "owner" || refusals[1] != "total" {
		t.Fatalf("refusals %v", refusals)
	}
}

// TestLocalFreeSpaceFloor: the local backend refuses a write that would
// leave less than its floor free, and keeps nothing of it.
func TestLocalFreeSpaceFloor(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenLocalWith(dir, 1<<62) // more than any disk has
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Put(context.Background(), Key{"s", "f"}, strings.NewReader("x"), Meta{Name: "f"})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Reason != "disk" {
		t.Fatalf("write below the floor: %v", err)
	}
	if l, _ := b.List(context.Background(), "s"); len(l) != 0 {
		t.Fatalf("stored: %v", l)
	}
	b2, _ := OpenLocalWith(dir, 1<<20)
	defer b2.Close()
	if _, err := b2.Put(context.Background(), Key{"s", "f"}, strings.NewReader("x"), Meta{Name: "f"}); err != nil {
		t.Fatalf("write above the floor: %v", err)
	}
}
