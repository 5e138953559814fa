package server

import (
	"context"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// newTestRedis connects one "node" to srv, closed when the test ends.
func newTestRedis(t testing.TB, srv *sigiltest.Redis, mod ...func(*RedisConfig)) *Redis {
	t.Helper()
	return redisEnv{url: srv.URL, prefix: "test:"}.node(t, mod...)
}

// twoNodes starts a redis-server and connects two nodes to it, each with
// its own client.
func twoNodes(t testing.TB) (*sigiltest.Redis, *Redis, *Redis) {
	t.Helper()
	srv := sigiltest.StartRedis(t)
	return srv, newTestRedis(t, srv), newTestRedis(t, srv)
}

// redisEnv is a Redis deployment that tests connect nodes to: one server,
// or a cluster shared by several tests, each under its own prefix.
type redisEnv struct {
	url, prefix string
}

// standalone starts a redis-server for one test.
func standalone(t testing.TB) redisEnv {
	return redisEnv{url: sigiltest.StartRedis(t).URL, prefix: "test:"}
}

// node connects one node (its own client), closed when the test ends.
func (e redisEnv) node(t testing.TB, mod ...func(*RedisConfig)) *Redis {
	t.Helper()
	// A generous OpTimeout: on a loaded machine a call can stall for a
	// second. Tests of the timeout itself set their own.
	cfg := RedisConfig{URL: e.url, Prefix: e.prefix, OpTimeout: 20 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := NewRedis(cfg)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// exists reports whether key exists, asked of Redis itself (so that its
// own clock decides expiry).
func exists(t testing.TB, r *Redis, key string) bool {
	t.Helper()
	n, err := r.client.Do(context.Background(), r.client.B().Exists().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatalf("EXISTS %s: %v", key, err)
	}
	return n == 1
}

// noErr fails the test on err.
func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkTTL fails the test unless key exists with a TTL of at most max:
// it will expire, and not later than it should. A test that must see a
// key expire uses a short TTL and waitFor; one that checks what a key
// holds uses a long TTL and checkTTL, so that a slow machine cannot let
// the key expire before it is looked at.
func checkTTL(t testing.TB, r *Redis, key string, max time.Duration) {
	t.Helper()
	ms, err := r.client.Do(context.Background(), r.client.B().Pttl().Key(key).Build()).AsInt64()
	if err != nil || ms <= 0 || ms > max.Milliseconds() {
		t.Fatalf("PTTL %s = %d ms, %v; want a TTL of at most %v", key, ms, err, max)
	}
}
