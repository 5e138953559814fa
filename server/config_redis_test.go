package server

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
)

func TestNewRedisRejectsBadConfig(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	for _, tc := range []struct {
		name string
		cfg  RedisConfig
		want string
	}{
		{"no URL", RedisConfig{}, "URL is required"},
		{"bad scheme", RedisConfig{URL: "http://user:s3cret@127.0.0.1:6379"}, "not a valid"},
		{"TLS without rediss", RedisConfig{URL: srv.URL, TLS: &tls.Config{}}, "rediss://"},
		{"brace in prefix", RedisConfig{URL: srv.URL, Prefix: "app{1}:"}, "must not contain"},
	} {
		r, err := NewRedis(tc.cfg)
		if err == nil {
			r.Close()
			t.Fatalf("%s: NewRedis succeeded", tc.name)
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("%s: error %q, want it to mention %q and not the password", tc.name, err, tc.want)
		}
	}
}

// A node does not start on a Redis that is not there, and says why without
// repeating the password of the URL.
func TestNewRedisUnreachable(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	url := strings.Replace(srv.URL, "redis://", "redis://user:s3cret@", 1)
	srv.Stop()
	r, err := NewRedis(RedisConfig{URL: url})
	if err == nil {
		r.Close()
		t.Fatal("NewRedis succeeded on a stopped server")
	}
	if !errors.Is(err, ErrRedisUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %q: want ErrRedisUnavailable, without the password", err)
	}
}

func TestRedisPingAndObserve(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	var mu sync.Mutex
	var ops []string
	var errs int
	r := newTestRedis(t, srv, func(c *RedisConfig) {
		c.ClientName = "node-a"
		c.Observe = func(op string, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			ops = append(ops, op)
			if err != nil {
				errs++
			}
			if d < 0 {
				t.Errorf("%s: negative duration", op)
			}
		}
	})
	ctx := context.Background()
	if err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	name, err := r.client.Do(ctx, r.client.B().ClientGetname().Build()).ToString()
	if err != nil || name != "node-a" {
		t.Fatalf("CLIENT GETNAME = %q, %v", name, err)
	}
	srv.Stop()
	if err := r.Ping(ctx); !errors.Is(err, ErrRedisUnavailable) {
		t.Fatalf("Ping of a stopped server: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(ops, ",") != "ping,ping" || errs != 1 {
		t.Fatalf("observed %v with %d errors; want ping,ping with 1 error", ops, errs)
	}
}

func TestRedisKeyPart(t *testing.T) {
	for in, want := range map[string]string{
		"alice":                                "alice",
		"0b8a6f7e-6f0e-4c1a-9a57-2a5f3c1d9e10": "0b8a6f7e-6f0e-4c1a-9a57-2a5f3c1d9e10",
		"a.b_c@d":                              "a.b_c@d",
		"":                                     "~",
		"a}b":                                  "~YX1i",
		"a:b":                                  "~YTpi",
		"~":                                    "~fg",
	} {
		if got := redisKeyPart(in); got != want {
			t.Errorf("redisKeyPart(%q) = %q, want %q", in, got, want)
		}
	}
}

// rediss:// connects over TLS, trusting the roots of RedisConfig.TLS; a
// server certificate that those roots do not trust is refused.
func TestRedisTLS(t *testing.T) {
	srv := sigiltest.StartRedisTLS(t)
	r := newTestRedis(t, srv, func(c *RedisConfig) { c.TLS = &tls.Config{RootCAs: srv.RootCAs} })
	ctx := context.Background()
	noErr(t, r.Ping(ctx))
	s := NewRedisReplayStore(r, nil)
	noErr(t, s.Check(ctx, replayCheck("tls-session", "id-1", 1)))
	if n, err := s.LastSeq(ctx, "tls-session"); err != nil || n != 1 {
		t.Fatalf("LastSeq over TLS = %d, %v", n, err)
	}

	if r, err := NewRedis(RedisConfig{URL: srv.URL}); err == nil {
		r.Close()
		t.Fatal("connected to a server whose certificate the system roots do not trust")
	}
	plain := strings.Replace(srv.URL, "rediss://", "redis://", 1)
	if r, err := NewRedis(RedisConfig{URL: plain, DialTimeout: time.Second}); err == nil {
		r.Close()
		t.Fatal("connected in plain text to a TLS port")
	}
}

// A Sentinel URL finds the primary through the Sentinel: the stores write
// to the primary. With rediss://, both the Sentinel and the primary are
// reached over TLS.
func TestRedisSentinel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *sigiltest.RedisSentinel
	}{
		{"plain", sigiltest.StartRedisSentinel},
		{"tls", sigiltest.StartRedisSentinelTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.start(t)
			tlsConf := func(c *RedisConfig) {
				if s.Primary.RootCAs != nil {
					c.TLS = &tls.Config{RootCAs: s.Primary.RootCAs}
				}
			}
			r := redisEnv{url: s.URL, prefix: "test:"}.node(t, tlsConf)
			store := NewRedisReplayStore(r, nil)
			ctx := context.Background()
			noErr(t, store.Check(ctx, replayCheck("sentinel-session", "id-1", 1)))
			direct := redisEnv{url: s.Primary.URL, prefix: "test:"}.node(t, tlsConf)
			if !exists(t, direct, store.seqKey("sentinel-session")) {
				t.Fatal("the replay mark is not on the primary")
			}
		})
	}
}
