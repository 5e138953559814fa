package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// limitClock is a settable clock for the limiters' windows.
type limitClock struct{ ns atomic.Int64 }

func (c *limitClock) Now() time.Time        { return time.Unix(0, c.ns.Load()) }
func (c *limitClock) Add(d time.Duration)   { c.ns.Add(int64(d)) }
func newLimitClock(t time.Time) *limitClock { c := &limitClock{}; c.ns.Store(t.UnixNano()); return c }

// limiterNodes returns n limiters named "acct" with limit max and a one-minute
// window, each on its own Redis client (a node), on one clock that starts
// at the beginning of a window.
func limiterNodes(t *testing.T, srv *sigiltest.Redis, n, max int) ([]*redisLimiter, *limitClock) {
	clk := newLimitClock(time.Unix(1_800_000_000, 0).Truncate(time.Minute))
	var out []*redisLimiter
	for range n {
		r := newTestRedis(t, srv, func(c *RedisConfig) { c.Now = clk.Now })
		out = append(out, newRedisLimiter(r, "acct", max, time.Minute))
	}
	return out, clk
}

func mustReserve(t *testing.T, l loginLimiter, key string) func(bool) {
	t.Helper()
	done, wait, err := l.reserve(context.Background(), key)
	if err != nil || done == nil {
		t.Fatalf("reserve %s: refused (wait %v, err %v)", key, wait, err)
	}
	return done
}

func mustRefuse(t *testing.T, l loginLimiter, key string, wantWait time.Duration) {
	t.Helper()
	done, wait, err := l.reserve(context.Background(), key)
	if err != nil || done != nil || wait != wantWait {
		t.Fatalf("reserve %s: done %v, wait %v, err %v; want refused with wait %v", key, done != nil, wait, err, wantWait)
	}
}

// Failures count across nodes: three failures spread over two nodes reach
// a limit of 3 on both, until the window ends; other keys are untouched.
func TestRedisLimiterCountsAcrossNodes(t *testing.T) {
	nodes, clk := limiterNodes(t, sigiltest.StartRedis(t), 2, 3)
	a, b := nodes[0], nodes[1]
	mustReserve(t, a, "password:alice")(true)
	mustReserve(t, b, "password:alice")(true)
	clk.Add(10 * time.Second)
	mustReserve(t, a, "password:alice")(true)
	mustRefuse(t, b, "password:alice", 50*time.Second)
	mustRefuse(t, a, "password:alice", 50*time.Second)
	mustReserve(t, b, "password:bob")(true)

	clk.Add(50 * time.Second) // the next window
	mustReserve(t, b, "password:alice")(false)
}

// Attempts in flight count until they are done; a success gives its
// attempt back, a failure keeps it.
func TestRedisLimiterInFlight(t *testing.T) {
	nodes, _ := limiterNodes(t, sigiltest.StartRedis(t), 2, 2)
	a, b := nodes[0], nodes[1]
	d1 := mustReserve(t, a, "addr")
	d2 := mustReserve(t, b, "addr")
	mustRefuse(t, a, "addr", time.Second) // only in flight: a second
	d1(false)
	d3 := mustReserve(t, a, "addr")
	d2(true)
	d3(true)
	mustRefuse(t, b, "addr", time.Minute)
	for range 5 { // successes never count
		mustReserve(t, a, "other")(false)
	}
}

// Of many concurrent reservations on three nodes, exactly the limit get
// through.
func TestRedisLimiterConcurrent(t *testing.T) {
	const limit = 5
	nodes, _ := limiterNodes(t, sigiltest.StartRedis(t), 3, limit)
	var got atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done, _, err := nodes[i%3].reserve(context.Background(), "k")
			if err != nil {
				t.Error(err)
			}
			if done != nil {
				got.Add(1)
			}
		}()
	}
	wg.Wait()
	if got.Load() != limit {
		t.Fatalf("%d reservations got through, want %d", got.Load(), limit)
	}
}

// A limiter that cannot reach Redis refuses with an error (the login is
// then answered 503), and works again when Redis is back.
func TestRedisLimiterFailsClosed(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	nodes, _ := limiterNodes(t, srv, 1, 3)
	srv.Stop()
	done, _, err := nodes[0].reserve(context.Background(), "k")
	if done != nil || !errors.Is(err, ErrRedisUnavailable) {
		t.Fatalf("reserve with Redis stopped: done %v, err %v", done != nil, err)
	}
	srv.Restart()
	sigiltest.Eventually(t, "the limiter to work again", func() bool {
		done, _, err := nodes[0].reserve(context.Background(), "k")
		if done != nil {
			done(false)
		}
		return err == nil
	})
}
