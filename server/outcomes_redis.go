package server

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisOutcomes is the OutcomeStore that the nodes of a cluster share:
// the copy of a frame accepted on one node is answered as its first copy
// on any node (spec.md §20.10). Build it with NewCluster.
//
// One key per accepted pub or dm frame, under the hash tag of the broker
// partition of the frame's channel (or recipient), so that the script
// that publishes the frame can record its answer in the same step:
//
//	<prefix>out:{<n>}:<sid>:<id>   "+" (success) or "-code:message"
//
// expiring with the frame's id in the replay state (its ts + skew).
//
// Cost: a success is recorded by the script that publishes the frame
// (the broker's SPUBLISH, or the history's append), in the round trip
// the publication makes anyway, and only if it published: no round trip
// of its own. A failure, and a dm to a recipient without a session, are
// recorded by one SET NX (never over a success that a publication which
// the node stopped waiting for recorded after all). A copy's answer is
// read with GET, polled while the key is absent (the first copy may be
// in hand on another node) until outcomeWait; an answer never recorded
// (the node died, or Redis failed meanwhile) leaves the copy answered
// replay_id, outcome unknown.
type RedisOutcomes struct {
	b *RedisBroker
	r *Redis
}

var _ OutcomeStore = (*RedisOutcomes)(nil)

func newRedisOutcomes(b *RedisBroker) *RedisOutcomes { return &RedisOutcomes{b: b, r: b.r} }

// outcomeRecord travels in the context of a pub or dm action to the
// engine that publishes it, which records the success in its script.
type outcomeRecord struct {
	topic    Topic
	key      string
	ttl      string // ms
	needSubs bool   // a dm: a success only if a node has a session of the recipient
	recorded atomic.Bool
}

type outcomeCtxKey struct{}

// outcomeFor returns the record that a publication to t made with ctx
// should write, or nil.
func outcomeFor(ctx context.Context, t Topic) *outcomeRecord {
	rec, _ := ctx.Value(outcomeCtxKey{}).(*outcomeRecord)
	if rec == nil || rec.topic != t {
		return nil
	}
	return rec
}

// args are the script arguments that record rec: the key (KEYS) and the
// value, TTL and whether subscribers are needed (ARGV).
func (rec *outcomeRecord) args() (key string, argv []string) {
	need := "0"
	if rec.needSubs {
		need = "1"
	}
	return rec.key, []string{outcomeOK, rec.ttl, need}
}

// outcomeRecordLua records a success (see outcomeRecord.args), given the
// subscriber count n that SPUBLISH answered: Lua appended to a script
// whose KEYS[ki] is the key and ARGV[ai..ai+2] the arguments.
func outcomeRecordLua(ki, ai int) string {
	k, v, ttl, need := strconv.Itoa(ki), strconv.Itoa(ai), strconv.Itoa(ai+1), strconv.Itoa(ai+2)
	return `
local function record_outcome(n)
  if KEYS[` + k + `] and (ARGV[` + need + `] == '0' or n > 0) then
    redis.call('SET', KEYS[` + k + `], ARGV[` + v + `], 'PX', ARGV[` + ttl + `])
  end
end
`
}

func (o *RedisOutcomes) key(sid string, env *protocol.Envelope) string {
	return o.r.key("out", o.b.partitionOf(outcomeTopic(env)).tag, redisKeyPart(sid), redisKeyPart(env.ID))
}

// Begin implements OutcomeStore.
func (o *RedisOutcomes) Begin(ctx context.Context, sid string, env *protocol.Envelope, until time.Time) (context.Context, func(*protocol.Error)) {
	rec := &outcomeRecord{topic: outcomeTopic(env), key: o.key(sid, env),
		ttl: strconv.FormatInt(o.r.ttl(until), 10), needSubs: env.Action == protocol.ActDM}
	return context.WithValue(ctx, outcomeCtxKey{}, rec), func(answer *protocol.Error) {
		if rec.recorded.Load() {
			return
		}
		cl := o.r.client
		set := cl.B().Set().Key(rec.key).Value(encodeOutcome(answer))
		var cmd rueidis.Completed
		if answer == nil {
			cmd = set.PxMilliseconds(o.r.ttl(until)).Build()
		} else {
			cmd = set.Nx().PxMilliseconds(o.r.ttl(until)).Build()
		}
		// A failure here leaves the copy's answer unknown (replay_id);
		// the call logs and counts it.
		_ = o.r.call(context.WithoutCancel(ctx), "outcome.record", func(ctx context.Context) error {
			err := cl.Do(ctx, cmd).Error()
			if rueidis.IsRedisNil(err) { // NX: a success was recorded
				return nil
			}
			return err
		})
	}
}

// outcomePoll bounds the interval between two reads of an answer not yet
// recorded.
const outcomePoll = 100 * time.Millisecond

// Answer implements OutcomeStore.
func (o *RedisOutcomes) Answer(ctx context.Context, sid string, env *protocol.Envelope) (*protocol.Error, bool, error) {
	key := o.key(sid, env)
	wait := 2 * time.Millisecond
	for {
		var v string
		err := o.r.call(ctx, "outcome.read", func(ctx context.Context) error {
			var err error
			v, err = o.r.client.Do(ctx, o.r.client.B().Get().Key(key).Build()).ToString()
			if rueidis.IsRedisNil(err) {
				v, err = "", nil
			}
			return err
		})
		if err != nil {
			return nil, false, err
		}
		if v != "" {
			answer, ok := decodeOutcome(v)
			return answer, ok, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, false, nil
		}
		wait = min(2*wait, outcomePoll)
	}
}
