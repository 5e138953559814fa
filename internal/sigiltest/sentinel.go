package sigiltest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// RedisSentinel is a Redis primary watched by one Sentinel, owned by one
// test.
type RedisSentinel struct {
	// Primary is the Redis server that clients end up talking to.
	Primary *Redis
	// Sentinel is the Sentinel process that clients ask for the primary.
	Sentinel *Redis
	// MasterSet is the name under which the Sentinel monitors Primary.
	MasterSet string
	// URL names the Sentinel and the master set, in the form
	// server.RedisConfig takes: redis://sentinel?master_set=NAME
	URL string
}

// StartRedisSentinel starts a primary and a Sentinel (redis-server
// --sentinel, quorum 1) that monitors it as "sigiltest".
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	return startRedisSentinel(t, StartRedis(t))
}

// StartRedisSentinelTLS is StartRedisSentinel with TLS only, on the
// primary and on the Sentinel, under one certificate that RootCAs of both
// trusts. URL is rediss://.
func StartRedisSentinelTLS(t testing.TB) *RedisSentinel {
	t.Helper()
	s := startRedisSentinel(t, StartRedisTLS(t))
	s.URL = "rediss://" + s.URL[len("redis://"):]
	return s
}

func startRedisSentinel(t testing.TB, primary *Redis) *RedisSentinel {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	// The Sentinel rewrites its config file, so it gets its own.
	if err := os.WriteFile(conf, []byte("sentinel monitor sigiltest 127.0.0.1 "+strconv.Itoa(primary.port)+" 1\n"), 0o600); err != nil {
		t.Fatalf("sigiltest: writing sentinel.conf: %v", err)
	}
	sentinel := startRedis(t, func(r *Redis) {
		r.conf = conf
		r.args = []string{"--sentinel"}
		if primary.tls != nil {
			r.RootCAs = primary.RootCAs
			r.tls = append(append([]string(nil), primary.tls...), "--tls-replication", "yes")
		}
	})
	return &RedisSentinel{
		Primary: primary, Sentinel: sentinel, MasterSet: "sigiltest",
		URL: "redis://" + sentinel.Addr + "?master_set=sigiltest",
	}
}
