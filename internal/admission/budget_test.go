package admission

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBudgetWaitsEvictsAndRefuses(t *testing.T) {
	const M = 1 << 20
	b := NewBudget(1000*M, 100*M) // 900 MiB to share
	warm, ok := b.TryTake(KindWarm, 300*M)
	if !ok {
		t.Fatal("warm share refused")
	}
	sess, err := b.Take(context.Background(), KindSession, 300*M, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	exec1, err := b.Take(context.Background(), KindExec, 300*M, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Used != 900*M || st.Held[KindWarm] != 300*M || st.Held[KindSession] != 300*M || st.Held[KindExec] != 300*M {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := b.TryTake(KindExec, 1*M); ok {
		t.Fatal("took past the budget")
	}

	// Full, nothing to evict: a wait that ends says why.
	_, err = b.Take(context.Background(), KindExec, 300*M, 50*time.Millisecond)
	busy, ok := IsBusy(err)
	if !ok || !busy.Memory {
		t.Fatalf("want a memory ErrBusy, got %v", err)
	}
	const want = "the server's memory budget is fully committed: 900 of 900 MiB held by 300 MiB of executions, 300 MiB of stateful sessions, 300 MiB of warm templates"
	if busy.Reason != want {
		t.Fatalf("reason %q", busy.Reason)
	}

	// The evictor frees the session's share: the next run gets it at once.
	evicted := 0
	b.SetEvictor(func() bool {
		if evicted > 0 {
			return false
		}
		evicted++
		sess()
		return true
	})
	exec2, err := b.Take(context.Background(), KindExec, 300*M, time.Second)
	if err != nil || evicted != 1 {
		t.Fatalf("after eviction: err %v, evicted %d", err, evicted)
	}

	// Full again: a waiter gets the share a finishing run gives back.
	got := make(chan error, 1)
	go func() {
		r, err := b.Take(context.Background(), KindExec, 300*M, 10*time.Second)
		if err == nil {
			r()
		}
		got <- err
	}()
	exec1()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}

	if _, err := b.Take(context.Background(), KindExec, 901*M, time.Second); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized share: %v", err)
	}
	exec3, ok := b.TryTake(KindExec, 300*M)
	if !ok {
		t.Fatal("the share given back is not free")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Take(ctx, KindExec, 300*M, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	exec2()
	exec3()
	warm()
	warm() // a second release is a no-op
	if st := b.Stats(); st.Used != 0 {
		t.Fatalf("all released, used %d", st.Used)
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, self string
		files      map[string]string
		want       int64
	}{
		{"v1", "4:memory:/ctr\n1:cpu:/\n", map[string]string{
			"memory/ctr/memory.limit_in_bytes": "1610612736\n",
			"memory/ctr/memory.stat":           "cache 0\nhierarchical_memory_limit 1610612736\n"}, 1610612736},
		{"v1 parent lower", "4:memory,foo:/a/b\n", map[string]string{
			"memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
			"memory/a/b/memory.stat":           "hierarchical_memory_limit 1073741824\n"}, 1073741824},
		{"v1 unlimited", "4:memory:/x\n", map[string]string{
			"memory/x/memory.limit_in_bytes": "9223372036854771712\n",
			"memory/x/memory.stat":           "hierarchical_memory_limit 9223372036854771712\n"}, 0},
		{"v1 namespaced", "4:memory:/docker/abc\n", map[string]string{
			"memory/memory.limit_in_bytes": "5368709120\n"}, 5368709120},
		{"v2", "0::/pod/ctr\n", map[string]string{
			"pod/ctr/memory.max": "2147483648\n", "pod/memory.max": "max\n"}, 2147483648},
		{"v2 parent lower", "0::/pod/ctr\n", map[string]string{
			"pod/ctr/memory.max": "max\n", "pod/memory.max": "1073741824\n"}, 1073741824},
		{"v2 namespaced, server in init", "0::/init\n", map[string]string{
			"init/memory.max": "max\n", "memory.max": "5368709120\n"}, 5368709120},
		{"none", "0::/\n", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, s := range tc.files {
				write(filepath.Join(root, p), s)
			}
			write(filepath.Join(root, "self"), tc.self)
			got, _, err := CgroupMemoryLimit(root, filepath.Join(root, "self"))
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}
