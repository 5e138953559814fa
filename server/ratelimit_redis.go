package server

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// redisLimiter is the loginLimiter that the nodes sharing a Redis count
// together, so that an attacker gains nothing by spreading guesses over the
// nodes. Each key has one hash per window, in fixed windows of the nodes'
// clock (window i covers [i·window, (i+1)·window) since the Unix epoch):
//
//	<prefix>login:<name>:<key>:<i>   f: failures, p: attempts in flight
//
// expiring at the window's end. An attempt is reserved (p+1) before the
// credentials are checked, in one script that refuses it when f reaches
// the limit (wait until the window ends) or f+p does (wait a second); done
// is a second script (p-1, and f+1 for a failure) on the same window's
// hash. So at most max attempts start per key and window across all nodes,
// and a node that dies with attempts in flight holds them only until the
// window ends. Two round trips per attempt: reserve and done.
//
// A Redis failure is returned by reserve, and the login is refused (503):
// the limiter never lets an attempt through unchecked. A failed done is
// reported to RedisConfig.Observe and otherwise ignored: its attempt stays
// counted as in flight until the window ends, the safe side.
type redisLimiter struct {
	r      *Redis
	name   string // "acct" or "addr"
	max    int
	window time.Duration
}

func newRedisLimiter(r *Redis, name string, max int, window time.Duration) *redisLimiter {
	return &redisLimiter{r: r, name: name, max: max, window: window.Truncate(time.Millisecond)}
}

// limitReserveScript: KEYS[1] the window's hash; ARGV[1] the limit,
// ARGV[2] the TTL (ms) until the window ends. Returns 0 when reserved, 1
// when the failures reach the limit, 2 when failures and attempts in flight
// do.
var limitReserveScript = rueidis.NewLuaScript(`
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
local p = tonumber(redis.call('HGET', KEYS[1], 'p') or '0')
local max = tonumber(ARGV[1])
if f >= max then return 1 end
if f + p >= max then return 2 end
redis.call('HINCRBY', KEYS[1], 'p', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
`)

// limitDoneScript: KEYS[1] the window's hash; ARGV[1] 1 for a failure, 0
// otherwise. A hash that has expired (the window ended) is left alone.
var limitDoneScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'p') or '0') > 0 then redis.call('HINCRBY', KEYS[1], 'p', -1) end
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'f', 1) end
return 0
`)

// reserve implements loginLimiter.
func (l *redisLimiter) reserve(ctx context.Context, key string) (func(bool), time.Duration, error) {
	now := l.r.now()
	w := l.window.Milliseconds()
	i := now.UnixMilli() / w
	end := time.UnixMilli((i + 1) * w)
	hash := l.r.key("login", l.name, redisKeyPart(key), strconv.FormatInt(i, 10))
	var verdict int64
	err := l.r.call(ctx, "ratelimit.reserve", func(ctx context.Context) error {
		var err error
		verdict, err = limitReserveScript.Exec(ctx, l.r.client, []string{hash},
			[]string{strconv.Itoa(l.max), strconv.FormatInt(l.r.ttl(end), 10)}).AsInt64()
		return err
	})
	switch {
	case err != nil:
		return nil, 0, err
	case verdict == 1:
		return nil, max(end.Sub(now), time.Second), nil
	case verdict == 2:
		return nil, time.Second, nil
	}
	return func(failed bool) {
		arg := "0"
		if failed {
			arg = "1"
		}
		// The attempt's own request may be over: done runs on a context of
		// its own, bounded by OpTimeout.
		_ = l.r.call(context.WithoutCancel(ctx), "ratelimit.done", func(ctx context.Context) error {
			return limitDoneScript.Exec(ctx, l.r.client, []string{hash}, []string{arg}).Error()
		})
	}, 0, nil
}
