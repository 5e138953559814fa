package sigiltest

import (
	"sync"
	"time"
)

// Clock is the one test clock of the server, client and command tests: a
// test moves it forward with Advance, so that token lifetimes, expiry
// warnings and sweeps pass without sleeping through them. Give its Now to
// the Config or Options under test; socket deadlines, pings, timers and
// backoff stay on real time. It is safe for concurrent use.
//
// NewClock runs with real time, offset by what Advance added;
// NewStoppedClock stands still at the real time it was made and moves only
// by Advance. Neither moves backward, so a deadline computed from it at
// the start is never in the past.
type Clock struct {
	mu      sync.Mutex
	stopped bool
	base    time.Time // a stopped clock's start
	offset  time.Duration
}

// NewClock returns a clock that runs with real time, plus what Advance
// adds.
func NewClock() *Clock { return &Clock{} }

// NewStoppedClock returns a clock that stands at the current time and
// moves only by Advance.
func NewStoppedClock() *Clock { return &Clock{stopped: true, base: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.base.Add(c.offset)
	}
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d (d must not be negative).
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("sigiltest: a Clock does not move backward")
	}
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}
