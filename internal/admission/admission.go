// Package admission decides whether an execution may start now, wait in a
// bounded queue, or be turned away with a hint of when to retry; Budget
// (budget.go) does the same for the server's memory. It knows nothing of
// HTTP, sandboxes or sessions.
package admission

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrBusy is returned when the queue is full or the wait timed out.
type ErrBusy struct {
	RetryAfter time.Duration
	Reason     string
	// Memory is set when the memory budget (not the slot queue) was full.
	Memory bool
}

func (e *ErrBusy) Error() string { return e.Reason }

// Controller admits at most Concurrency executions at once and lets at most
// Queue more wait, each for at most Wait. It is FIFO.
type Controller struct {
	concurrency int
	queueCap    int
	wait        time.Duration

	mu      sync.Mutex
	running int
	queue   []chan struct{} // waiting executions, oldest first
	// avg is a moving average of execution time, for Retry-After hints.
	avg time.Duration
}

// New returns a controller.
func New(concurrency, queue int, wait time.Duration) *Controller {
	if concurrency < 1 {
		concurrency = 1
	}
	return &Controller{concurrency: concurrency, queueCap: queue, wait: wait, avg: time.Second}
}

// Stats are the controller's current numbers.
type Stats struct {
	Running, Queued, Concurrency, QueueCap int
}

// Stats reports what runs and waits now.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Running: c.running, Queued: len(c.queue), Concurrency: c.concurrency, QueueCap: c.queueCap}
}

// Acquire waits for a turn. On success the caller must call release exactly
// once when its execution is done. The wait ends early when ctx does (the
// client went away): then ctx's error is returned.
func (c *Controller) Acquire(ctx context.Context) (release func(), waited time.Duration, err error) {
	start := time.Now()
	c.mu.Lock()
	if c.running < c.concurrency && len(c.queue) == 0 {
		c.running++
		c.mu.Unlock()
		return c.releaser(start), 0, nil
	}
	if len(c.queue) >= c.queueCap {
		ra := c.retryAfterLocked()
		c.mu.Unlock()
		return nil, 0, &ErrBusy{RetryAfter: ra, Reason: "execution queue is full"}
	}
	turn := make(chan struct{})
	c.queue = append(c.queue, turn)
	c.mu.Unlock()

	timer := time.NewTimer(c.wait)
	defer timer.Stop()
	select {
	case <-turn:
		return c.releaser(time.Now()), time.Since(start), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = &ErrBusy{Reason: "timed out waiting for an execution slot"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ch := range c.queue {
		if ch == turn {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			if b, ok := err.(*ErrBusy); ok {
				b.RetryAfter = c.retryAfterLocked()
			}
			return nil, time.Since(start), err
		}
	}
	// The turn was handed over while we gave up: pass it on.
	c.handOffLocked()
	if b, ok := err.(*ErrBusy); ok {
		b.RetryAfter = c.retryAfterLocked()
	}
	return nil, time.Since(start), err
}

func (c *Controller) releaser(started time.Time) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			d := time.Since(started)
			c.avg = (c.avg*7 + d) / 8
			c.handOffLocked()
		})
	}
}

// handOffLocked gives a finished execution's slot to the oldest waiter, or
// frees it.
func (c *Controller) handOffLocked() {
	if len(c.queue) > 0 {
		next := c.queue[0]
		c.queue = c.queue[1:]
		close(next)
		return
	}
	c.running--
}

// retryAfterLocked estimates when a slot frees up for a newcomer.
func (c *Controller) retryAfterLocked() time.Duration {
	d := c.avg * time.Duration(len(c.queue)+1) / time.Duration(c.concurrency)
	return max(d, time.Second)
}

// IsBusy reports whether err is an ErrBusy and returns it.
func IsBusy(err error) (*ErrBusy, bool) {
	var b *ErrBusy
	ok := errors.As(err, &b)
	return b, ok
}

// RateLimit is N events per Window for one caller; zero N disables it.
type RateLimit struct {
	N      int
	Window time.Duration
}

// Limiter enforces a RateLimit per caller key with a token bucket
// (golang.org/x/time/rate: bursts up to N, refilling evenly over Window).
// Callers idle for a Window have a full bucket again and are forgotten, so
// the map holds only recent callers.
type Limiter struct {
	limit RateLimit
	mu    sync.Mutex
	seen  map[string]*caller
	sweep time.Time
}

type caller struct {
	lim  *rate.Limiter
	last time.Time
}

// NewLimiter returns a limiter, or nil (which allows everything) when
// limit.N is 0.
func NewLimiter(limit RateLimit) *Limiter {
	if limit.N <= 0 || limit.Window <= 0 {
		return nil
	}
	return &Limiter{limit: limit, seen: map[string]*caller{}}
}

// Allow takes one token for key, or reports how long until one is there.
func (l *Limiter) Allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweep) > l.limit.Window {
		for k, c := range l.seen {
			if now.Sub(c.last) > l.limit.Window {
				delete(l.seen, k)
			}
		}
		l.sweep = now
	}
	c, ok := l.seen[key]
	if !ok {
		c = &caller{lim: rate.NewLimiter(rate.Every(l.limit.Window/time.Duration(l.limit.N)), l.limit.N)}
		l.seen[key] = c
	}
	c.last = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused request takes no token
		return false, d
	}
	return true, 0
}
