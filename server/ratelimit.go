package server

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// loginLimiter bounds the failed logins per key (an account or a client
// address) in a window, counting the attempts in flight as failures until
// they are done. failureLimiter is the in-memory one; redisLimiter counts
// across the nodes that share a Redis.
type loginLimiter interface {
	// reserve takes an attempt for key. It returns done, which must be
	// called exactly once when the attempt is over, with whether it
	// failed; or, when the limit is reached, a nil done and how long to
	// wait; or an error when it could not tell, and then the caller fails
	// closed.
	reserve(ctx context.Context, key string) (done func(failed bool), wait time.Duration, err error)
}

// storeUnavailable is the answer to a request that needs a shared store
// that did not answer: 503 unavailable, to be retried after a second.
func storeUnavailable(msg string) *apiError {
	e := newAPIError(http.StatusServiceUnavailable, ErrCodeUnavailable, msg)
	e.retryAfter = time.Second
	return e
}

// reserveLogin takes an attempt from l for key, answering 429 with
// Retry-After when the limit is reached and 503 with Retry-After when the
// limiter's store does not answer: an attempt is never let through
// unchecked.
func (s *Server) reserveLogin(ctx context.Context, l loginLimiter, key string) (func(failed bool), *apiError) {
	done, wait, err := l.reserve(ctx, key)
	switch {
	case err != nil:
		s.storeError("ratelimit.reserve", err)
		return nil, storeUnavailable("the rate limit cannot be checked now")
	case done == nil:
		return nil, rateLimited(wait)
	}
	return done, nil
}

// failureLimiter counts failures per key in fixed windows, and the attempts
// in flight: an attempt is reserved before its credentials are checked, so
// that concurrent attempts cannot all be checked before the first failure
// is recorded. Keys whose window has ended are forgotten once per window
// of its clock.
type failureLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu        sync.Mutex
	keys      map[string]*failWindow
	nextSweep time.Time
}

type failWindow struct {
	start   time.Time // of the window: the first failure; zero before it
	n       int       // failures in the window
	pending int       // attempts reserved and not yet done
}

func newFailureLimiter(max int, window time.Duration, now func() time.Time) *failureLimiter {
	return &failureLimiter{max: max, window: window, now: now, keys: map[string]*failWindow{}}
}

// reserve implements loginLimiter; it never fails.
func (l *failureLimiter) reserve(_ context.Context, key string) (func(bool), time.Duration, error) {
	ok, wait := l.take(key)
	if !ok {
		return nil, wait, nil
	}
	return func(failed bool) { l.done(key, failed) }, 0, nil
}

// take takes an attempt for key, unless the failures in its window and
// the attempts in flight already reach the limit; then it reports how long
// to wait: until the window ends, or a second when only attempts in flight
// block it. Every successful take must be followed by exactly one done.
func (l *failureLimiter) take(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweepLocked(now)
	w := l.keys[key]
	if w == nil {
		w = &failWindow{}
		l.keys[key] = w
	}
	if !w.start.IsZero() && now.Sub(w.start) > l.window {
		w.start, w.n = time.Time{}, 0 // the window has ended
	}
	switch {
	case w.n >= l.max:
		return false, max(w.start.Add(l.window).Sub(now), time.Second)
	case w.n+w.pending >= l.max:
		return false, time.Second
	}
	w.pending++
	return true, 0
}

// done ends an attempt taken for key, recording a failure if it failed.
func (l *failureLimiter) done(key string, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.keys[key]
	if w == nil { // cannot happen: reserved keys are not swept
		return
	}
	w.pending--
	if failed {
		now := l.now()
		if w.start.IsZero() || now.Sub(w.start) > l.window {
			w.start, w.n = now, 0
		}
		w.n++
	}
	if w.n == 0 && w.pending == 0 {
		delete(l.keys, key)
	}
}

// sweepLocked forgets, once per window, the keys with nothing in flight
// whose window has ended.
func (l *failureLimiter) sweepLocked(now time.Time) {
	if now.Before(l.nextSweep) {
		return
	}
	for k, w := range l.keys {
		if w.pending == 0 && now.Sub(w.start) > l.window {
			delete(l.keys, k)
		}
	}
	l.nextSweep = now.Add(l.window)
}
