package server

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// RedisConfig configures the connection that a node's Redis stores share.
// Only URL is required; every other zero value is a documented default.
//
// Redis 7.0 or newer is required. Every key of one session, one subject or
// one family carries the same hash tag ({...}), so that the multi-key Lua
// scripts run unchanged on Redis Cluster.
type RedisConfig struct {
	// URL locates Redis, in the forms rueidis.ParseURL reads:
	//
	//	redis://[user:password@]host:port[/db]      one server
	//	rediss://...                                the same over TLS
	//	redis://host:26379?master_set=NAME&addr=host2:26379
	//	                                            Sentinel: the addresses are
	//	                                            sentinels, NAME the master set
	//	redis://host1:7000?addr=host2:7001&addr=host3:7002
	//	                                            Cluster: any reachable nodes;
	//	                                            the topology is discovered
	//
	// With rediss://, Sentinels are reached over TLS too. With TLS to several
	// servers (Cluster, Sentinel), every certificate must carry the one
	// server name checked: the URL's first host, or TLS.ServerName.
	//
	// The URL may carry a password: it is never logged, and callers must not
	// log it either.
	URL string
	// Prefix starts every key and channel name. It must not contain '{' or
	// '}' (they would change the hash tags). Empty means "sigil:". Nodes that
	// act as one server share a prefix; unrelated deployments sharing one
	// Redis use different ones.
	Prefix string
	// TLS configures TLS for a rediss:// URL (to trust a private CA, or to
	// present a client certificate). Nil means the system roots and TLS 1.2
	// or newer, with the URL's host as the server name. It is an error with
	// a redis:// URL.
	TLS *tls.Config
	// ClientName names the node's connections in CLIENT LIST (for example the
	// node name). Empty means none.
	ClientName string
	// OpTimeout bounds each store call, including its retries. Zero means
	// 1s. A call that runs out of time fails (and the caller fails closed).
	OpTimeout time.Duration
	// DialTimeout bounds each connection attempt. Zero means 2s.
	DialTimeout time.Duration
	// PipelineConns is the number of connections to each Redis server that
	// carry the auto-pipelined commands of all stores, as a power of two
	// (rueidis' PipelineMultiplex). Zero means rueidis' default: 2 (4
	// connections) for one server or Sentinel, 0 (1 connection) for Cluster.
	PipelineConns int
	// PoolSize bounds the pool of dedicated connections, which blocking
	// commands and dedicated clients use (the stores use none). Zero means
	// rueidis' default, 1024.
	PoolSize int
	// Observe, when set, is called after every store call with the
	// operation's name (such as "replay.check"), its duration and its error
	// (nil on success, including when the answer is a rejection). It is how
	// a server exports Redis latency and error metrics. It must be fast.
	Observe func(op string, d time.Duration, err error)
	// Now is the clock that TTLs and expiry checks use. Nil means time.Now.
	// TTLs are sent to Redis as durations computed on this clock, so Redis'
	// clock need not agree with the nodes'.
	Now func() time.Time
}

// Defaults of RedisConfig.
const (
	DefaultRedisPrefix      = "sigil:"
	DefaultRedisOpTimeout   = time.Second
	DefaultRedisDialTimeout = 2 * time.Second
)

// ErrRedisUnavailable wraps every error of a Redis store call: Redis is
// unreachable, did not answer within RedisConfig.OpTimeout, or answered
// with an error. The store decided nothing, and its caller must fail
// closed: refuse the frame, the token or the refresh, never accept it
// unchecked.
var ErrRedisUnavailable = errors.New("sigil: redis unavailable")

// Redis is one node's connection to Redis, shared by its Redis stores
// (NewRedisReplayStore, NewRedisRevocationStore, NewRedisRefreshStore). It
// is safe for concurrent use. Commands from concurrent callers are
// pipelined on a few connections (rueidis' auto-pipelining). After an
// outage it reconnects by itself; nothing needs to be re-created.
type Redis struct {
	client  rueidis.Client
	prefix  string
	timeout time.Duration
	observe func(string, time.Duration, error)
	metrics *redisMetrics
	now     func() time.Time
}

// NewRedis connects to Redis. It fails if Redis cannot be reached now: a
// node does not start on a Redis that is not there. Close releases it.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.URL == "" {
		return nil, errors.New("sigil: RedisConfig.URL is required")
	}
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		// The URL may hold a password: the error does not repeat it.
		return nil, errors.New("sigil: RedisConfig.URL is not a valid redis:// or rediss:// URL")
	}
	if cfg.TLS != nil {
		if opt.TLSConfig == nil {
			return nil, errors.New("sigil: RedisConfig.TLS needs a rediss:// URL")
		}
		tc := cfg.TLS.Clone()
		if tc.ServerName == "" {
			tc.ServerName = opt.TLSConfig.ServerName
		}
		opt.TLSConfig = tc
	}
	if opt.TLSConfig != nil && opt.Sentinel.MasterSet != "" {
		opt.Sentinel.TLSConfig = opt.TLSConfig // rediss:// covers the sentinels too
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, errors.New("sigil: RedisConfig.Prefix must not contain '{' or '}'")
	}
	timeout := redisDuration(cfg.OpTimeout, DefaultRedisOpTimeout)
	opt.Dialer.Timeout = redisDuration(cfg.DialTimeout, DefaultRedisDialTimeout)
	opt.Sentinel.Dialer.Timeout = opt.Dialer.Timeout
	if cfg.ClientName != "" {
		opt.ClientName = cfg.ClientName
	}
	opt.PipelineMultiplex = cfg.PipelineConns
	opt.BlockingPoolSize = cfg.PoolSize
	opt.DisableCache = true
	// Read-only commands are retried twice after a connection error, then
	// the call fails; writes and scripts are never retried (a lost answer
	// is reported as an error rather than the script run twice).
	opt.RetryDelay = func(attempts int, _ rueidis.Completed, _ error) time.Duration {
		if attempts > 2 {
			return -1
		}
		return time.Duration(attempts) * 10 * time.Millisecond
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, wrapRedis("connect", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Redis{client: client, prefix: prefix, timeout: timeout, observe: cfg.Observe, metrics: newRedisMetrics(), now: now}, nil
}

func redisDuration(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

// Close closes the connections. The stores built on r fail afterwards.
func (r *Redis) Close() { r.client.Close() }

// Ping checks that Redis answers, within OpTimeout. A server's readiness
// check can use it.
func (r *Redis) Ping(ctx context.Context) error {
	return r.call(ctx, "ping", func(ctx context.Context) error {
		return r.client.Do(ctx, r.client.B().Ping().Build()).Error()
	})
}

// call runs one store operation under OpTimeout, reports it (to Observe
// and the metrics), and wraps its error in ErrRedisUnavailable.
func (r *Redis) call(ctx context.Context, op string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	r.report(op, time.Since(start), err)
	if err != nil {
		return wrapRedis(op, err)
	}
	return nil
}

func wrapRedis(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrRedisUnavailable, op, err)
}

// ttl is the time from now until t, in whole milliseconds and at least 1
// (Redis refuses a TTL of 0, and an instant already past is kept for the
// shortest time Redis allows).
func (r *Redis) ttl(t time.Time) int64 {
	return max(1, t.Sub(r.now()).Milliseconds())
}

// key returns the name of a key: the prefix, then parts joined by ':'.
// Callers mark the hash tag themselves with redisTag.
func (r *Redis) key(parts ...string) string {
	n := len(r.prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(r.prefix)
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(p)
	}
	return b.String()
}

// redisTag returns s as a hash tag: "{" + redisKeyPart(s) + "}". Keys with the same
// tag are in the same Cluster slot.
func redisTag(s string) string { return "{" + redisKeyPart(s) + "}" }

// redisKeyPart returns s in a form that cannot be confused with another value or
// with the key syntax: s itself when it has only letters, digits and
// "-._@" (UUIDs, most user names, base64url hashes) and is not empty;
// otherwise "~" followed by its base64url encoding. So a part never holds
// ':', '{' or '}', and two different values never give the same part.
func redisKeyPart(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '@')
	}) {
		return s
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(s))
}
