package admission

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Budget is the whole server's memory: the most that executions, live
// stateful sessions and warm templates may be allowed to use together, so
// that the sum of their kernel limits plus a reserve for the server itself
// never exceeds what the server's own cgroup (or the machine) holds. A
// sandbox can then never push the server over its limit: the kernel kills
// the sandbox that exceeds its own limit, never the server.
//
// It counts bytes of limits, not bytes in use: it knows nothing of
// sandboxes, sessions or cgroups. Holders take their share with Take (or
// TryTake) and give it back with the returned release.
type Budget struct {
	total, reserve int64

	mu      sync.Mutex
	held    map[string]int64 // by kind (exec, session, warm)
	used    int64
	changed chan struct{} // closed and replaced whenever memory is released
	evict   func() bool
}

// Budget kinds: what a share of the budget pays for.
const (
	KindExec    = "exec"
	KindSession = "session"
	KindWarm    = "warm"
)

// NewBudget is a budget of total bytes, reserve of which stay with the
// server itself (its heap, buffers, files it stages into workspaces).
func NewBudget(total, reserve int64) *Budget {
	return &Budget{total: total, reserve: reserve, held: map[string]int64{}, changed: make(chan struct{})}
}

// SetEvictor installs evict, called when a Take does not fit: it frees
// memory (by closing an idle stateful session, whose release gives its
// share back) and reports whether it freed any. It must not call Take.
func (b *Budget) SetEvictor(evict func() bool) {
	b.mu.Lock()
	b.evict = evict
	b.mu.Unlock()
}

// Available is what holders may share: the total less the reserve.
func (b *Budget) Available() int64 { return b.total - b.reserve }

// ErrTooLarge is returned for a share larger than the whole budget: it
// could never be granted, so it is refused without waiting.
var ErrTooLarge = errors.New("larger than the whole memory budget")

// TryTake takes n bytes for kind if they are free now, without evicting
// or waiting.
func (b *Budget) TryTake(kind string, n int64) (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.Available() {
		return nil, false
	}
	return b.takeLocked(kind, n), true
}

// Take takes n bytes for kind. When they are not free it first asks the
// evictor to close idle sessions, then waits up to wait for releases. It
// fails with an *ErrBusy (Memory set) when the wait ends, ctx's error when
// ctx does, ErrTooLarge when n exceeds the budget.
func (b *Budget) Take(ctx context.Context, kind string, n int64, wait time.Duration) (release func(), err error) {
	if n > b.Available() {
		return nil, fmt.Errorf("%s of %d MiB: %w (%d MiB)", kind, n>>20, ErrTooLarge, b.Available()>>20)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		b.mu.Lock()
		if b.used+n <= b.Available() {
			r := b.takeLocked(kind, n)
			b.mu.Unlock()
			return r, nil
		}
		changed, evict := b.changed, b.evict
		b.mu.Unlock()
		if evict != nil && evict() {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			st := b.Stats()
			return nil, &ErrBusy{Memory: true, RetryAfter: time.Second, Reason: fmt.Sprintf(
				"the server's memory budget is fully committed: %d of %d MiB held by %d MiB of executions, %d MiB of stateful sessions, %d MiB of warm templates",
				st.Used>>20, st.Available>>20, st.Held[KindExec]>>20, st.Held[KindSession]>>20, st.Held[KindWarm]>>20)}
		}
	}
}

func (b *Budget) takeLocked(kind string, n int64) func() {
	b.used += n
	b.held[kind] += n
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.used -= n
			b.held[kind] -= n
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		})
	}
}

// BudgetStats are a budget's numbers, in bytes.
type BudgetStats struct {
	Total, Reserve, Available, Used int64
	Held                            map[string]int64
}

// Stats reports the budget and what is held of it.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := map[string]int64{KindExec: 0, KindSession: 0, KindWarm: 0}
	for k, v := range b.held {
		h[k] = v
	}
	return BudgetStats{Total: b.total, Reserve: b.reserve, Available: b.total - b.reserve, Used: b.used, Held: h}
}

// unlimited is what cgroup v1 reports for no limit (a page-rounded
// LONG_MAX); anything this large is treated as no limit.
const unlimited = 1 << 62

// CgroupMemoryLimit reads the memory limit of the cgroup this process runs
// in: cgroup v2's memory.max, else v1's memory.limit_in_bytes. root is the
// cgroup filesystem's mount point (/sys/fs/cgroup) and procSelf the
// process's /proc/self/cgroup. It returns 0 when there is no limit, and
// where it was read.
func CgroupMemoryLimit(root, procSelf string) (limit int64, source string, err error) {
	data, err := os.ReadFile(procSelf)
	if err != nil {
		return 0, "", err
	}
	var v1, v2 string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case containsController(parts[1], "memory"):
			v1 = parts[2]
		}
	}
	var candidates []string
	if v1 != "" {
		candidates = append(candidates, filepath.Join(root, "memory", v1, "memory.limit_in_bytes"),
			filepath.Join(root, "memory", "memory.limit_in_bytes")) // the cgroup namespace's root
	}
	if v2 != "" {
		candidates = append(candidates, filepath.Join(root, v2, "memory.max"), filepath.Join(root, "unified", v2, "memory.max"))
	}
	for _, f := range candidates {
		n, ok, err := readLimit(f)
		if err != nil {
			return 0, f, err
		}
		if !ok {
			continue
		}
		if strings.HasSuffix(f, "memory.limit_in_bytes") {
			// v1: an ancestor's lower limit binds too.
			if h, ok := hierarchicalV1(filepath.Join(filepath.Dir(f), "memory.stat")); ok && (n == 0 || h < n) {
				n = h
			}
		} else {
			// v2: walk up to the mount's root; the lowest memory.max binds.
			// (In a private cgroup namespace the mount's root is the
			// container's cgroup, which has a memory.max of its own.)
			for d := filepath.Dir(filepath.Dir(f)); strings.HasPrefix(d, root); d = filepath.Dir(d) {
				if m, ok, _ := readLimit(filepath.Join(d, "memory.max")); ok && m > 0 && (n == 0 || m < n) {
					n = m
				}
				if d == root || d == filepath.Join(root, "unified") {
					break
				}
			}
		}
		return n, f, nil
	}
	return 0, "", nil
}

// readLimit reads one limit file: ok is false when it does not exist, n 0
// for no limit.
func readLimit(f string) (n int64, ok bool, err error) {
	raw, err := os.ReadFile(f)
	if err != nil {
		return 0, false, nil
	}
	s := strings.TrimSpace(string(raw))
	if s == "max" {
		return 0, true, nil
	}
	n, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, true, fmt.Errorf("%s: %q is not a number", f, s)
	}
	if n >= unlimited {
		return 0, true, nil
	}
	return n, true, nil
}

// hierarchicalV1 reads memory.stat's hierarchical_memory_limit: the lowest
// limit of the cgroup and its ancestors.
func hierarchicalV1(stat string) (int64, bool) {
	raw, err := os.ReadFile(stat)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "hierarchical_memory_limit "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil && n < unlimited {
				return n, true
			}
		}
	}
	return 0, false
}

func containsController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}
