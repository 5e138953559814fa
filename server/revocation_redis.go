package server

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisRevocationStore is the RevocationStore that nodes share through
// Redis (spec §4.4). Its keys:
//
//	<prefix>revoked:jti:<jti>    a revoked token id, kept until the token's
//	                             expiry (a later, longer revocation extends it;
//	                             a shorter one does not shorten it)
//	<prefix>revoked:sub:<sub>    a revoked subject: the revocation time in
//	                             Unix nanoseconds, the latest one kept, with
//	                             no expiry (as in the memory store)
//
// IsRevoked is one round trip: the two reads are pipelined as separate
// single-key commands, so they also work when Redis Cluster puts the keys
// on different nodes.
//
// Each revocation is written and announced in one script, which also
// publishes a notice on the channel <prefix>revocations. Watch delivers the
// notices, so that every node can close its matching live sessions at once;
// a node that misses a notice still refuses the token at its next frame,
// because every frame consults the shared keys.
//
// A Redis failure is returned as an error wrapping ErrRedisUnavailable:
// IsRevoked never answers "not revoked" when it could not ask.
type RedisRevocationStore struct {
	r       *Redis
	channel string
}

var _ RevocationStore = (*RedisRevocationStore)(nil)

// NewRedisRevocationStore returns a revocation store on r.
func NewRedisRevocationStore(r *Redis) *RedisRevocationStore {
	return &RedisRevocationStore{r: r, channel: r.key("revocations")}
}

// RevocationEvent is one notice from Watch: a token revoked (TokenID and
// Until), a subject revoked (Subject and At), or a Resync.
type RevocationEvent struct {
	// TokenID is a revoked token id (jti); Until is when its token expires.
	TokenID string
	Until   time.Time
	// Subject is a revoked subject: every token of it issued at or before
	// At is revoked.
	Subject string
	At      time.Time
	// Resync means that notices may have been lost: the subscription was
	// re-established after a connection loss, a notice could not be
	// decoded, or the receiver fell behind. The receiver re-checks every
	// live session against the store.
	Resync bool
}

// revocationNotice is the JSON published for each revocation.
type revocationNotice struct {
	JTI   string    `json:"jti,omitempty"`
	Until time.Time `json:"until,omitzero"`
	Sub   string    `json:"sub,omitempty"`
	At    time.Time `json:"at,omitzero"`
}

func (s *RedisRevocationStore) tokenKey(jti string) string {
	return s.r.key("revoked", "jti", redisKeyPart(jti))
}

func (s *RedisRevocationStore) subjectKey(sub string) string {
	return s.r.key("revoked", "sub", redisKeyPart(sub))
}

// revokeTokenScript: KEYS[1] the token's key; ARGV[1] its TTL (ms),
// ARGV[2] the channel, ARGV[3] the notice.
var revokeTokenScript = rueidis.NewLuaScript(`
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('SET', KEYS[1], '1', 'PX', ttl) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
`)

// revokeSubjectScript: KEYS[1] the subject's key; ARGV[1] the revocation
// time (Unix ns, decimal, compared exactly as strings), ARGV[2] the
// channel, ARGV[3] the notice.
var revokeSubjectScript = rueidis.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
local at = ARGV[1]
if not cur or #at > #cur or (#at == #cur and at > cur) then redis.call('SET', KEYS[1], at) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
`)

// RevokeToken implements RevocationStore.
func (s *RedisRevocationStore) RevokeToken(ctx context.Context, jti string, until time.Time) error {
	notice, err := json.Marshal(revocationNotice{JTI: jti, Until: until})
	if err != nil {
		return err
	}
	return s.r.call(ctx, "revocation.revoke_token", func(ctx context.Context) error {
		return revokeTokenScript.Exec(ctx, s.r.client, []string{s.tokenKey(jti)},
			[]string{strconv.FormatInt(s.r.ttl(until), 10), s.channel, string(notice)}).Error()
	})
}

// Revocation times are stored in Unix nanoseconds, which hold the years
// 1970 to 2262.
var (
	minRevocationTime = time.Unix(0, 0)
	maxRevocationTime = time.Unix(0, 1<<63-1)
)

// RevokeSubject implements RevocationStore. at must lie between 1970 and
// 2262.
func (s *RedisRevocationStore) RevokeSubject(ctx context.Context, sub string, at time.Time) error {
	if at.Before(minRevocationTime) || at.After(maxRevocationTime) {
		return errors.New("sigil: subject revocation time out of range")
	}
	notice, err := json.Marshal(revocationNotice{Sub: sub, At: at})
	if err != nil {
		return err
	}
	return s.r.call(ctx, "revocation.revoke_subject", func(ctx context.Context) error {
		return revokeSubjectScript.Exec(ctx, s.r.client, []string{s.subjectKey(sub)},
			[]string{strconv.FormatInt(at.UnixNano(), 10), s.channel, string(notice)}).Error()
	})
}

// IsRevoked implements protocol.RevocationChecker in one round trip.
func (s *RedisRevocationStore) IsRevoked(ctx context.Context, jti, sub string, iat time.Time) (bool, error) {
	var revoked bool
	err := s.r.call(ctx, "revocation.is_revoked", func(ctx context.Context) error {
		res := s.r.client.DoMulti(ctx, s.tokenRead(jti), s.subjectRead(sub))
		var err error
		revoked, err = revokedFrom(res[0], res[1], iat)
		return err
	})
	return revoked, err
}

// tokenRead and subjectRead are IsRevoked's two reads; revokedFrom
// interprets their answers for a token issued at iat. RedisReplayStore
// pipelines them with its replay check.
func (s *RedisRevocationStore) tokenRead(jti string) rueidis.Completed {
	return s.r.client.B().Exists().Key(s.tokenKey(jti)).Build()
}

func (s *RedisRevocationStore) subjectRead(sub string) rueidis.Completed {
	return s.r.client.B().Get().Key(s.subjectKey(sub)).Build()
}

func revokedFrom(token, subject rueidis.RedisResult, iat time.Time) (bool, error) {
	n, err := token.AsInt64()
	if err != nil {
		return false, err
	}
	at, err := subject.AsInt64()
	if rueidis.IsRedisNil(err) {
		return n == 1, nil
	}
	if err != nil {
		return false, err
	}
	return n == 1 || !iat.After(time.Unix(0, at)), nil
}

// Watch subscribes to the revocation notices of every node and returns
// once the subscription is in place (or with an error if it could not be
// made within RedisConfig.OpTimeout). Until ctx is done it then calls fn,
// from one goroutine at a time, for each notice published by
// RevokeToken or RevokeSubject on any node, this one included.
//
// After a connection loss Watch re-subscribes by itself, with a backoff,
// and then calls fn with a Resync event, because notices published in the
// gap are lost (Redis pub/sub keeps nothing). fn must not block for long;
// if it falls behind by more than 1024 notices, they are replaced by one
// Resync. A node needs one Watch: two on one Redis share a connection, and
// the end of one makes the other re-subscribe (and Resync).
func (s *RedisRevocationStore) Watch(ctx context.Context, fn func(RevocationEvent)) error {
	return watchChannel(ctx, s.r, "revocation.watch", s.channel, RevocationEvent{Resync: true},
		func(msg string) (RevocationEvent, bool) {
			var n revocationNotice
			if protocol.DecodeBody([]byte(msg), &n) != nil || (n.JTI != "") == (n.Sub != "") {
				return RevocationEvent{}, false
			}
			return RevocationEvent{TokenID: n.JTI, Until: n.Until, Subject: n.Sub, At: n.At}, true
		}, fn)
}
