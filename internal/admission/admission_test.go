package admission

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBoundsConcurrencyAndQueue(t *testing.T) {
	c := New(2, 1, time.Second)
	r1, _, err1 := c.Acquire(context.Background())
	r2, _, err2 := c.Acquire(context.Background())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	got := make(chan error, 1)
	go func() {
		r, _, err := c.Acquire(context.Background())
		if err == nil {
			r()
		}
		got <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); c.Stats().Queued != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the third acquire never queued")
		}
	}
	// The queue holds one: the next is turned away at once with a hint.
	_, _, err := c.Acquire(context.Background())
	b, ok := IsBusy(err)
	if !ok || b.RetryAfter < time.Second {
		t.Fatalf("want busy with retry-after, got %v", err)
	}
	r1()
	if err := <-got; err != nil {
		t.Fatalf("queued acquire: %v", err)
	}
	r2()
	if s := c.Stats(); s.Running != 0 || s.Queued != 0 {
		t.Fatalf("stats after all released: %+v", s)
	}
}

func TestWaitTimeoutAndCancel(t *testing.T) {
	c := New(1, 5, 50*time.Millisecond)
	r, _, _ := c.Acquire(context.Background())
	defer r()
	if _, _, err := c.Acquire(context.Background()); !errors.As(err, new(*ErrBusy)) {
		t.Fatalf("want timeout busy, got %v", err)
	}
	// Cancelled once it is seen waiting (not after a guessed delay).
	c.wait = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for c.Stats().Queued != 1 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, _, err := c.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("want canceled, got %v", err)
	}
	if s := c.Stats(); s.Queued != 0 || s.Running != 1 {
		t.Fatalf("stats: %+v", s)
	}
}

// TestNeverOverAdmits hammers the controller, including waiters that give
// up just as their turn comes, and checks the bound is never exceeded and
// no slot is lost.
func TestNeverOverAdmits(t *testing.T) {
	c := New(3, 50, 5*time.Millisecond)
	var now, peak atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _, err := c.Acquire(context.Background())
			if err != nil {
				return
			}
			n := now.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			now.Add(-1)
			r()
		}()
	}
	wg.Wait()
	if peak.Load() > 3 {
		t.Fatalf("peak concurrency %d > 3", peak.Load())
	}
	if s := c.Stats(); s.Running != 0 || s.Queued != 0 {
		t.Fatalf("slots lost: %+v", s)
	}
}

func TestLimiter(t *testing.T) {
	if ok, _ := (*Limiter)(nil).Allow("k", time.Now()); !ok {
		t.Fatal("nil limiter refused")
	}
	l := NewLimiter(RateLimit{N: 3, Window: 3 * time.Second})
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("a", now); !ok {
			t.Fatalf("burst %d refused", i)
		}
	}
	ok, wait := l.Allow("a", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.Allow("b", now); !ok {
		t.Fatal("another caller was limited")
	}
	if ok, _ := l.Allow("a", now.Add(time.Second)); !ok {
		t.Fatal("token not refilled after a second")
	}
	if ok, _ := l.Allow("a", now.Add(time.Second)); ok {
		t.Fatal("refilled more than one token")
	}
}
