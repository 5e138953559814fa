package server

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisReplayStore is the protocol.ReplayStore that nodes share through
// Redis, so that a session may reconnect to any node and keep its replay
// protection (spec §7 step 8).
//
// Per session it keeps two kinds of keys, under one hash tag:
//
//	<prefix>replay:{<sid>}:seq        the greatest accepted seq, as decimal;
//	                                  kept until the session's expiry
//	<prefix>replay:{<sid>}:id:<id>    one per accepted id; kept until the
//	                                  id's expiry (its ts + skew)
//
// A Server with Config.Redis checks the proofs of admin requests
// (AdminHandler), which have seqs of their own, in the same form under
// <prefix>admin-replay:{<sid>}.
//
// Check is one round trip: a Lua script (EVALSHA) that, atomically, answers
// replay_id if the id's key exists, replay_seq if seq is not greater than
// the mark, and otherwise creates the id's key and raises the mark. Of any
// number of concurrent checks of one frame, on any nodes, exactly one
// succeeds. An id's key is written only after its frame's signature has
// verified (the verifier calls Check at step 8).
//
// Unlike MemoryReplayStore, the number of ids a session holds is bounded
// only by its rate of accepted frames times the id window; the server's
// rate limits bound that.
//
// A Redis failure is returned as an error wrapping ErrRedisUnavailable,
// never as an acceptance, so a verifier that fails on errors fails closed.
type RedisReplayStore struct {
	r    *Redis
	name string // the keys' first part: "replay", or another space of seqs
	rev  *RedisRevocationStore
}

var _ protocol.ReplayRevocationChecker = (*RedisReplayStore)(nil)

// NewRedisReplayStore returns a replay store on r. If rev is not nil, the
// store also answers rev's revocation check in the same round trip
// (protocol.ReplayRevocationChecker): a verifier whose revocation checker
// is rev then makes one Redis round trip per frame, not two.
func NewRedisReplayStore(r *Redis, rev *RedisRevocationStore) *RedisReplayStore {
	return &RedisReplayStore{r: r, name: "replay", rev: rev}
}

// replayCheckScript implements Check. Seqs are compared as decimal strings
// (shorter is smaller, then byte order), which is exact for every uint64
// where Lua's numbers would not be.
//
// KEYS[1] the session's seq mark, KEYS[2] the id's key.
// ARGV[1] seq, ARGV[2] the id's TTL (ms), ARGV[3] the session's TTL (ms).
// Returns 0 (accepted), 1 (replay_id) or 2 (replay_seq).
var replayCheckScript = rueidis.NewLuaScript(replayCheckSource)

// replayCheckSHA is the script's SHA-1, for the EVALSHA of CheckRevoked
// (rueidis's Lua computes the same).
var replayCheckSHA = func() string {
	sum := sha1.Sum([]byte(replayCheckSource))
	return hex.EncodeToString(sum[:])
}()

const replayCheckSource = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local last = redis.call('GET', KEYS[1]) or '0'
local seq = ARGV[1]
if #seq < #last or (#seq == #last and seq <= last) then return 2 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
local ttl = tonumber(ARGV[3])
local pttl = redis.call('PTTL', KEYS[1])
if pttl > ttl then ttl = pttl end
redis.call('SET', KEYS[1], seq, 'PX', ttl)
return 0
`

func (s *RedisReplayStore) seqKey(session string) string {
	return s.r.key(s.name, redisTag(session), "seq")
}

func (s *RedisReplayStore) idKey(session, id string) string {
	return s.r.key(s.name, redisTag(session), "id", id)
}

// checkArgs returns the keys and arguments of replayCheckScript for c.
func (s *RedisReplayStore) checkArgs(c protocol.ReplayCheck) (keys, args []string) {
	return []string{s.seqKey(c.Session), s.idKey(c.Session, c.ID)},
		[]string{strconv.FormatUint(c.Seq, 10), strconv.FormatInt(s.r.ttl(c.IDExpiry), 10), strconv.FormatInt(s.r.ttl(c.SessionExpiry), 10)}
}

// Check implements protocol.ReplayStore in one round trip.
func (s *RedisReplayStore) Check(ctx context.Context, c protocol.ReplayCheck) error {
	var verdict int64
	err := s.r.call(ctx, "replay.check", func(ctx context.Context) error {
		var err error
		keys, args := s.checkArgs(c)
		verdict, err = replayCheckScript.Exec(ctx, s.r.client, keys, args).AsInt64()
		return err
	})
	if err != nil {
		return err
	}
	return replayVerdict(verdict, c)
}

// replayVerdict turns the script's answer into Check's.
func replayVerdict(verdict int64, c protocol.ReplayCheck) error {
	switch verdict {
	case 1:
		return protocol.ReplayError(protocol.CodeReplayID, c.ID)
	case 2:
		return protocol.ReplayError(protocol.CodeReplaySeq, c.ID)
	}
	return nil
}

// Covers implements protocol.ReplayRevocationChecker: true for the
// revocation store given to NewRedisReplayStore.
func (s *RedisReplayStore) Covers(r protocol.RevocationChecker) bool {
	rev, ok := r.(*RedisRevocationStore)
	return ok && s.rev != nil && rev == s.rev
}

// CheckRevoked implements protocol.ReplayRevocationChecker: the replay
// script and the revocation store's two reads, pipelined in one round trip
// (on a Redis Cluster, rueidis sends each to the node of its slot at once).
// Any failed read is an error.
func (s *RedisReplayStore) CheckRevoked(ctx context.Context, c protocol.ReplayCheck, jti, sub string, iat time.Time) (bool, error) {
	if s.rev == nil {
		return false, errors.New("sigil: replay store: no revocation store to check")
	}
	var verdict int64
	var revoked bool
	err := s.r.call(ctx, "replay.check", func(ctx context.Context) error {
		cl := s.r.client
		keys, args := s.checkArgs(c)
		res := cl.DoMulti(ctx,
			cl.B().Evalsha().Sha1(replayCheckSHA).Numkeys(2).Key(keys...).Arg(args...).Build(),
			s.rev.tokenRead(jti), s.rev.subjectRead(sub))
		v, err := res[0].AsInt64()
		if re, ok := rueidis.IsRedisErr(err); ok && re.IsNoScript() {
			// The first use on this Redis (or after a restart or a
			// SCRIPT FLUSH): EVAL runs the script and caches it. The reads
			// above stand.
			v, err = cl.Do(ctx, cl.B().Eval().Script(replayCheckSource).Numkeys(2).Key(keys...).Arg(args...).Build()).AsInt64()
		}
		if err != nil {
			return err
		}
		verdict = v
		revoked, err = revokedFrom(res[1], res[2], iat)
		return err
	})
	if err != nil {
		return false, err
	}
	return revoked, replayVerdict(verdict, c)
}

// LastSeq implements protocol.ReplayStore.
func (s *RedisReplayStore) LastSeq(ctx context.Context, session string) (uint64, error) {
	var seq uint64
	err := s.r.call(ctx, "replay.last_seq", func(ctx context.Context) error {
		v, err := s.r.client.Do(ctx, s.r.client.B().Get().Key(s.seqKey(session)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return nil
		}
		if err != nil {
			return err
		}
		seq, err = strconv.ParseUint(v, 10, 64)
		return err
	})
	return seq, err
}
