package server

import (
	"sync"
	"time"
)

// failureLimiter counts failures per key in fixed windows. Keys whose
// window has ended are forgotten once per window of its clock.
type failureLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu        sync.Mutex
	keys      map[string]*failWindow
	nextSweep time.Time
}

type failWindow struct {
	start time.Time
	n     int
}

func newFailureLimiter(max int, window time.Duration, now func() time.Time) *failureLimiter {
	return &failureLimiter{max: max, window: window, now: now, keys: map[string]*failWindow{}}
}

// blocked reports whether key is over the limit and for how long.
func (l *failureLimiter) blocked(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.keys[key]
	if w == nil {
		return false, 0
	}
	left := w.start.Add(l.window).Sub(l.now())
	if left <= 0 {
		delete(l.keys, key)
		return false, 0
	}
	return w.n >= l.max, left
}

// fail records a failure for key.
func (l *failureLimiter) fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !now.Before(l.nextSweep) { // by time: once per window
		for k, w := range l.keys {
			if now.Sub(w.start) > l.window {
				delete(l.keys, k)
			}
		}
		l.nextSweep = now.Add(l.window)
	}
	w := l.keys[key]
	if w == nil || now.Sub(w.start) > l.window {
		w = &failWindow{start: now}
		l.keys[key] = w
	}
	w.n++
}
