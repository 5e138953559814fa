package server_test

import (
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// With Config.Redis, failed logins count across the nodes: an account's
// failures on two nodes add up to its limit on both; while Redis does not
// answer, a login is refused with 503 and Retry-After, never checked
// unlimited; the Redis operations show in the metrics.
func TestLoginLimitsAcrossNodes(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	cl := newClusterEnv(t, 2, rs.URL, "limits:", func(_ int, _ *server.ClusterConfig, c *server.Config) {
		if c != nil {
			c.LoginFailuresPerAccount, c.LoginFailuresPerAddress = 3, 100
		}
	})
	a, b := cl.nodes[0], cl.nodes[1]
	for i, n := range []*env{a, b, a} {
		if st, _ := postToken(t, n.url, tokenBody(t, "alice", "wrong")); st != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, st)
		}
	}
	for _, n := range []*env{a, b} {
		st, ra := postToken(t, n.url, tokenBody(t, "alice", "pw")) // even the right password
		if st != 429 || ra == "" {
			t.Fatalf("4th attempt: %d (Retry-After %q), want 429 on every node", st, ra)
		}
	}
	if st, _ := postToken(t, b.url, tokenBody(t, "bob", "pw")); st != 200 {
		t.Fatalf("another account: %d", st)
	}
	if m := a.metric(`sigil_redis_seconds_count{op="ratelimit.reserve"}`); m == "" {
		t.Fatal("no sigil_redis_seconds for ratelimit.reserve")
	}

	rs.Stop()
	st, ra := postToken(t, b.url, tokenBody(t, "bob", "pw"))
	if st != 503 || ra == "" {
		t.Fatalf("with Redis stopped: %d (Retry-After %q), want 503", st, ra)
	}
	if m := b.metric(`sigil_redis_errors_total{op="ratelimit.reserve"}`); !strings.HasSuffix(m, " 1") {
		t.Fatalf("redis errors %q", m)
	}
	if m := b.metric(`sigil_backend_errors_total{backend="store",op="ratelimit.reserve"}`); !strings.HasSuffix(m, " 1") {
		t.Fatalf("backend errors %q", m)
	}
	rs.Restart() // empty: the counts are gone
	waitUntil(t, "logins to work with Redis back", func() bool {
		st, _ := postToken(t, a.url, tokenBody(t, "alice", "pw"))
		return st == 200
	})
}
