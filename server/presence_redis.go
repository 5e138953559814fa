package server

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisPresence is the Presence that the nodes of a cluster share through
// Redis, beside their RedisBroker (build both with NewCluster). Its keys:
//
//	<prefix>ps:{<n>}:pm:<ch>         hash: member subject -> number of nodes
//	                                 where it has a session in ch
//	<prefix>ps:{<n>}:pn:<ch>:<node>  set: the members that node holds in ch
//	<prefix>ps:{<n>}:key:<ch>        hash: the current content key of ch,
//	                                 sealed (v: version, k: the key)
//	<prefix>ps:{<n>}:kv:<ch>         the last key version of ch (kept a day
//	                                 after its last use; a version is at
//	                                 least the node's clock in µs, so that
//	                                 versions never repeat, even after Redis
//	                                 lost its data)
//	<prefix>node:{<node>}:alive      the node's heartbeat (TTL: 3 heartbeats)
//	<prefix>node:{<node>}:chans      set: the channels the node holds members in
//	<prefix>node:{<node>}:sessions   hash: its live sessions (SessionInfo JSON)
//	<prefix>nodes                    set: the nodes
//
// where {<n>} is the channel's broker partition (RedisBroker) and <node> a
// random id the node takes when it registers. A channel's keys and its
// Redis channel share a hash tag, so that one script changes the
// membership and publishes the join or leave event that announces it:
// events and changes are in one order on every node, and a subject joins
// (or leaves) exactly when its first session on any node joins (its last
// one leaves). Join and Leave are one round trip (two for a node's first
// or last member of a channel), Members one.
//
// Every node refreshes its heartbeat each ClusterConfig.Heartbeat and, at
// the same time, looks for nodes whose heartbeat expired: it removes their
// members (publishing their leave events), rotates the keys of the
// channels they were in, and forgets their sessions. So the members of a
// node that died disappear within four heartbeats (20 s by default). A
// node that finds its own heartbeat gone (it was cut off from Redis for
// longer than three heartbeats, or Redis lost its data) registers again
// under a new id and re-announces what it holds.
//
// What this node holds is kept in memory too: Redis converges to it. A
// change whose script failed is retried at the next heartbeat (scripts are
// idempotent), and the session list is written in the background.
type RedisPresence struct {
	b    *RedisBroker
	r    *Redis
	node string
	hb   time.Duration
	sign PresenceSigner

	// mu: Lock while registering and reconciling; RLock for every other
	// call that writes under the node id.
	mu sync.RWMutex
	id string

	lmu    sync.Mutex
	local  map[string]map[string]struct{} // channel -> subjects with a session here
	unsure map[chanSub]struct{}           // pairs whose Redis state a failed call left unknown

	smu      sync.Mutex
	sessions map[string]SessionInfo
	dirty    map[string]struct{}
	kick     chan struct{}

	alive atomic.Bool // the last heartbeat was written
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

var _ Presence = (*RedisPresence)(nil)

type chanSub struct{ ch, sub string }

// keyVersionTTL is how long a channel's last key version is kept.
const keyVersionTTL = 24 * time.Hour

func newRedisPresence(b *RedisBroker, node string, heartbeat time.Duration) *RedisPresence {
	return &RedisPresence{b: b, r: b.r, node: node, hb: heartbeat,
		local: map[string]map[string]struct{}{}, unsure: map[chanSub]struct{}{},
		sessions: map[string]SessionInfo{}, dirty: map[string]struct{}{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
}

func (p *RedisPresence) chanKey(what, ch string) string {
	return p.r.key("ps", p.b.partitionOf(ChannelTopic(ch)).tag, what, redisKeyPart(ch))
}
func (p *RedisPresence) membersKey(ch string) string { return p.chanKey("pm", ch) }
func (p *RedisPresence) heldKey(ch, id string) string {
	return p.chanKey("pn", ch) + ":" + id
}
func (p *RedisPresence) keyKey(ch string) string     { return p.chanKey("key", ch) }
func (p *RedisPresence) versionKey(ch string) string { return p.chanKey("kv", ch) }
func (p *RedisPresence) nodesKey() string            { return p.r.key("nodes") }
func (p *RedisPresence) nodeKey(id, what string) string {
	return p.r.key("node", "{"+id+"}", what)
}
func (p *RedisPresence) ttl() time.Duration { return 3 * p.hb }

// joinScript: KEYS[1] members, KEYS[2] the node's held set of the
// channel; ARGV[1] the subject, ARGV[2] the Redis channel, ARGV[3] the
// join event. Returns {joined, members}.
var joinScript = rueidis.NewLuaScript(`
local joined = 0
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then
    joined = 1
    redis.call('SPUBLISH', ARGV[2], ARGV[3])
  end
end
return {joined, redis.call('HKEYS', KEYS[1])}
`)

// leaveScript: KEYS[1] members, KEYS[2] the node's held set, KEYS[3] the
// channel's key; ARGV as joinScript with the leave event. The key goes
// with the last member. Returns {left, members left}.
var leaveScript = rueidis.NewLuaScript(`
local left = 0
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    left = 1
    redis.call('SPUBLISH', ARGV[2], ARGV[3])
  end
end
local n = redis.call('HLEN', KEYS[1])
if n == 0 then redis.call('DEL', KEYS[3]) end
return {left, n}
`)

// reapScript removes a dead node's members of a channel. KEYS as
// leaveScript (the dead node's held set); ARGV[1] the Redis channel, then
// pairs of subject and leave event. Returns {subjects removed, members
// left, key version or 0}.
var reapScript = rueidis.NewLuaScript(`
local ev = {}
for i = 2, #ARGV, 2 do ev[ARGV[i]] = ARGV[i+1] end
local removed = 0
for _, sub in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  removed = removed + 1
  if redis.call('HINCRBY', KEYS[1], sub, -1) <= 0 then
    redis.call('HDEL', KEYS[1], sub)
    if ev[sub] then redis.call('SPUBLISH', ARGV[1], ev[sub]) end
  end
end
redis.call('DEL', KEYS[2])
local n = redis.call('HLEN', KEYS[1])
if n == 0 then redis.call('DEL', KEYS[3]) end
return {removed, n, tonumber(redis.call('HGET', KEYS[3], 'v') or '0')}
`)

// keyVersionScript reserves the next key version of a channel, if its key
// is still version ARGV[1] (0: none). KEYS[1] the last version, KEYS[2]
// the key; ARGV[2] the last version's TTL (ms), ARGV[3] the node's clock
// in microseconds. A version is at least the clock, so that versions keep
// growing even after Redis lost its data. Returns the new version, or 0 if
// the key has moved on.
var keyVersionScript = rueidis.NewLuaScript(`
if (redis.call('HGET', KEYS[2], 'v') or '0') ~= ARGV[1] then return 0 end
local v = redis.call('INCR', KEYS[1])
if v < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[3])
  v = tonumber(ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v
`)

// keySetScript stores a channel's new key and publishes it, if the key is
// still version ARGV[1]. KEYS[1] the key; ARGV[2] the new version, ARGV[3]
// the sealed key publication, ARGV[4] the Redis channel. Returns 1 if
// stored.
var keySetScript = rueidis.NewLuaScript(`
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'k', ARGV[3])
redis.call('SPUBLISH', ARGV[4], ARGV[3])
return 1
`)

// Start implements Presence: it registers the node and starts its
// heartbeat. b must be the RedisBroker of the same Cluster.
func (p *RedisPresence) Start(b Broker, sign PresenceSigner) error {
	if rb, ok := b.(*RedisBroker); !ok || rb != p.b {
		return errors.New("sigil: a RedisPresence needs the RedisBroker of its Cluster as Config.Broker")
	}
	p.sign = sign
	if err := p.register(context.Background()); err != nil {
		return err
	}
	p.alive.Store(true)
	p.wg.Add(2)
	go p.heartbeat()
	go p.flusher()
	return nil
}

// event signs the join or leave of sub in ch and encodes it as the broker
// publishes it.
func (p *RedisPresence) event(act, ch, sub string) (string, error) {
	ev, err := p.sign(act, ch, sub)
	if err != nil {
		return "", err
	}
	return p.b.encode(ev)
}

// addLocal records that sub has a session in ch here; it reports whether
// it is the channel's first subject here.
func (p *RedisPresence) addLocal(ch, sub string) bool {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	subs := p.local[ch]
	first := subs == nil
	if first {
		subs = map[string]struct{}{}
		p.local[ch] = subs
	}
	subs[sub] = struct{}{}
	return first
}

// removeLocal forgets sub in ch here; it reports whether ch has no
// subject left here.
func (p *RedisPresence) removeLocal(ch, sub string) bool {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	subs := p.local[ch]
	delete(subs, sub)
	if len(subs) == 0 {
		delete(p.local, ch)
		return true
	}
	return false
}

func (p *RedisPresence) markUnsure(ch, sub string) {
	p.lmu.Lock()
	p.unsure[chanSub{ch, sub}] = struct{}{}
	p.lmu.Unlock()
}

// join runs joinScript for sub in ch under node id.
func (p *RedisPresence) join(ctx context.Context, id, ch, sub string) ([]string, bool, error) {
	ev, err := p.event(protocol.ActJoin, ch, sub)
	if err != nil {
		return nil, false, err
	}
	var joined int64
	var members []string
	err = p.r.call(ctx, "presence.join", func(ctx context.Context) error {
		res, err := joinScript.Exec(ctx, p.r.client, []string{p.membersKey(ch), p.heldKey(ch, id)},
			[]string{sub, p.b.channelOf(ChannelTopic(ch)), ev}).ToArray()
		if err != nil {
			return err
		}
		if len(res) != 2 {
			return errors.New("unexpected reply")
		}
		if joined, err = res[0].AsInt64(); err != nil {
			return err
		}
		members, err = res[1].AsStrSlice()
		return err
	})
	if err != nil {
		return nil, false, err
	}
	slices.Sort(members)
	return members, joined == 1, nil
}

// leave runs leaveScript for sub in ch under node id.
func (p *RedisPresence) leave(ctx context.Context, id, ch, sub string) (bool, int, error) {
	ev, err := p.event(protocol.ActLeave, ch, sub)
	if err != nil {
		return false, 0, err
	}
	var left, n int64
	err = p.r.call(ctx, "presence.leave", func(ctx context.Context) error {
		res, err := leaveScript.Exec(ctx, p.r.client, []string{p.membersKey(ch), p.heldKey(ch, id), p.keyKey(ch)},
			[]string{sub, p.b.channelOf(ChannelTopic(ch)), ev}).AsIntSlice()
		if err != nil {
			return err
		}
		if len(res) != 2 {
			return errors.New("unexpected reply")
		}
		left, n = res[0], res[1]
		return nil
	})
	return left == 1, int(n), err
}

// Join implements Presence.
func (p *RedisPresence) Join(ctx context.Context, ch, sub string) ([]string, bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.addLocal(ch, sub) {
		err := p.r.call(ctx, "presence.join", func(ctx context.Context) error {
			return p.r.client.Do(ctx, p.r.client.B().Sadd().Key(p.nodeKey(p.id, "chans")).Member(ch).Build()).Error()
		})
		if err != nil {
			p.removeLocal(ch, sub)
			return nil, false, err
		}
	}
	members, joined, err := p.join(ctx, p.id, ch, sub)
	if err != nil {
		p.removeLocal(ch, sub)
		p.markUnsure(ch, sub) // the script may have run: the next heartbeat undoes it
		return nil, false, err
	}
	return members, joined, nil
}

// Leave implements Presence.
func (p *RedisPresence) Leave(ctx context.Context, ch, sub string) (bool, int, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	last := p.removeLocal(ch, sub)
	left, n, err := p.leave(ctx, p.id, ch, sub)
	if err != nil {
		p.markUnsure(ch, sub) // the next heartbeat retries it
		return false, 0, err
	}
	if last {
		// A channel listed without members here is harmless: a failure
		// is not an error.
		_ = p.r.call(ctx, "presence.leave", func(ctx context.Context) error {
			return p.r.client.Do(ctx, p.r.client.B().Srem().Key(p.nodeKey(p.id, "chans")).Member(ch).Build()).Error()
		})
	}
	return left, n, nil
}

// Members implements Presence: one HKEYS.
func (p *RedisPresence) Members(ctx context.Context, ch string) ([]string, error) {
	var members []string
	err := p.r.call(ctx, "presence.members", func(ctx context.Context) error {
		var err error
		members, err = p.r.client.Do(ctx, p.r.client.B().Hkeys().Key(p.membersKey(ch)).Build()).AsStrSlice()
		return err
	})
	if err != nil {
		return nil, err
	}
	if members == nil {
		members = []string{}
	}
	slices.Sort(members)
	return members, nil
}

// ChannelKey implements Presence: one HGET, or, for a channel without a
// key, the two scripts of a rotation and one more HGET.
func (p *RedisPresence) ChannelKey(ctx context.Context, ch string) (*ChannelKey, error) {
	for range 3 {
		k, err := p.readKey(ctx, ch)
		if err != nil || k != nil {
			return k, err
		}
		if err := p.RotateKey(ctx, ch, 0); err != nil {
			return nil, err
		}
	}
	return nil, wrapRedis("presence.channel_key", errors.New("the channel's key keeps changing"))
}

// readKey returns ch's current key, or nil if it has none.
func (p *RedisPresence) readKey(ctx context.Context, ch string) (*ChannelKey, error) {
	var sealed string
	err := p.r.call(ctx, "presence.channel_key", func(ctx context.Context) error {
		var err error
		sealed, err = p.r.client.Do(ctx, p.r.client.B().Hget().Key(p.keyKey(ch)).Field("k").Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return nil
		}
		return err
	})
	if err != nil || sealed == "" {
		return nil, err
	}
	pub, err := p.b.decode(sealed, false)
	if err != nil {
		return nil, err
	}
	if pub.Key == nil || pub.Key.Channel != ch {
		return nil, errors.New("sigil: the stored key of a channel is not its key")
	}
	return pub.Key, nil
}

// RotateKey implements Presence: two scripts, the first reserves the next
// version (the version is sealed with the key, so that Redis cannot pass
// an old key off as a new one), the second stores the key and publishes
// it, if no other node rotated it meanwhile.
func (p *RedisPresence) RotateKey(ctx context.Context, ch string, from uint64) error {
	fromArg := strconv.FormatUint(from, 10)
	var v int64
	err := p.r.call(ctx, "presence.rotate_key", func(ctx context.Context) error {
		var err error
		v, err = keyVersionScript.Exec(ctx, p.r.client, []string{p.versionKey(ch), p.keyKey(ch)},
			[]string{fromArg, strconv.FormatInt(keyVersionTTL.Milliseconds(), 10), strconv.FormatInt(p.r.now().UnixMicro(), 10)}).AsInt64()
		return err
	})
	if err != nil || v == 0 {
		return err
	}
	ck, err := protocol.NewContentKey(protocol.ChannelScope(ch), nil)
	if err != nil {
		return err
	}
	sealed, err := p.b.encode(&Publication{Key: &ChannelKey{Channel: ch, Version: uint64(v), Key: ck, Created: p.r.now()}})
	if err != nil {
		return err
	}
	return p.r.call(ctx, "presence.rotate_key", func(ctx context.Context) error {
		return keySetScript.Exec(ctx, p.r.client, []string{p.keyKey(ch)},
			[]string{fromArg, strconv.FormatInt(v, 10), sealed, p.b.channelOf(ChannelTopic(ch))}).Error()
	})
}

// SetSession implements Presence: the session list is written by the
// flusher, within a round trip.
func (p *RedisPresence) SetSession(key string, info SessionInfo) {
	info.Node = p.node
	p.smu.Lock()
	p.sessions[key] = info
	p.dirty[key] = struct{}{}
	p.smu.Unlock()
	p.signal()
}

// RemoveSession implements Presence.
func (p *RedisPresence) RemoveSession(key string) {
	p.smu.Lock()
	delete(p.sessions, key)
	p.dirty[key] = struct{}{}
	p.smu.Unlock()
	p.signal()
}

func (p *RedisPresence) signal() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Sessions implements Presence: the sessions of every node whose
// heartbeat is alive. Two round trips.
func (p *RedisPresence) Sessions(ctx context.Context) ([]SessionInfo, error) {
	var out []SessionInfo
	err := p.r.call(ctx, "presence.sessions", func(ctx context.Context) error {
		c := p.r.client
		ids, err := c.Do(ctx, c.B().Smembers().Key(p.nodesKey()).Build()).AsStrSlice()
		if err != nil || len(ids) == 0 {
			return err
		}
		cmds := make(rueidis.Commands, 0, 2*len(ids))
		for _, id := range ids {
			cmds = append(cmds, c.B().Exists().Key(p.nodeKey(id, "alive")).Build(),
				c.B().Hvals().Key(p.nodeKey(id, "sessions")).Build())
		}
		res := c.DoMulti(ctx, cmds...)
		for i := 0; i < len(res); i += 2 {
			alive, err := res[i].AsInt64()
			if err != nil {
				return err
			}
			vals, err := res[i+1].AsStrSlice()
			if err != nil {
				return err
			}
			if alive == 0 {
				continue
			}
			for _, v := range vals {
				var info SessionInfo
				if err := json.Unmarshal([]byte(v), &info); err != nil {
					return err
				}
				out = append(out, info)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []SessionInfo{}
	}
	sortSessions(out)
	return out, nil
}

// flusher writes the session list's changes as they come.
func (p *RedisPresence) flusher() {
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		}
		if err := p.flush(context.Background()); err != nil {
			select { // retried after a pause (and at every heartbeat)
			case <-p.done:
				return
			case <-time.After(min(p.hb, time.Second)):
				p.signal()
			}
		}
	}
}

// flush writes the changed sessions under the node's id.
func (p *RedisPresence) flush(ctx context.Context) error {
	p.smu.Lock()
	keys := make([]string, 0, len(p.dirty))
	set := make([]string, 0, 2*len(p.dirty))
	var del []string
	for k := range p.dirty {
		keys = append(keys, k)
		if info, ok := p.sessions[k]; ok {
			data, err := json.Marshal(info)
			if err != nil {
				p.smu.Unlock()
				return err
			}
			set = append(set, k, string(data))
		} else {
			del = append(del, k)
		}
	}
	clear(p.dirty)
	p.smu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	p.mu.RLock()
	id := p.id
	err := p.r.call(ctx, "presence.sessions_write", func(ctx context.Context) error {
		c := p.r.client
		var cmds rueidis.Commands
		key := p.nodeKey(id, "sessions")
		if len(set) > 0 {
			h := c.B().Hset().Key(key).FieldValue()
			for i := 0; i < len(set); i += 2 {
				h = h.FieldValue(set[i], set[i+1])
			}
			cmds = append(cmds, h.Build())
		}
		if len(del) > 0 {
			cmds = append(cmds, c.B().Hdel().Key(key).Field(del...).Build())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
	p.mu.RUnlock()
	if err != nil {
		p.smu.Lock()
		for _, k := range keys {
			p.dirty[k] = struct{}{}
		}
		p.smu.Unlock()
	}
	return err
}

// register takes a new node id and writes everything the node holds
// under it: its heartbeat, its sessions, and its members (announcing the
// joins of those that the server's membership had lost).
func (p *RedisPresence) register(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := uuid.NewString()
	err := p.r.call(ctx, "presence.register", func(ctx context.Context) error {
		c := p.r.client
		for _, r := range c.DoMulti(ctx,
			c.B().Set().Key(p.nodeKey(id, "alive")).Value(p.node).Px(p.ttl()).Build(),
			c.B().Sadd().Key(p.nodesKey()).Member(id).Build()) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	p.id = id
	// Every pair this node holds is re-announced by reconcile, every
	// session by the flusher.
	p.lmu.Lock()
	for ch, subs := range p.local {
		for sub := range subs {
			p.unsure[chanSub{ch, sub}] = struct{}{}
		}
	}
	p.lmu.Unlock()
	p.smu.Lock()
	for k := range p.sessions {
		p.dirty[k] = struct{}{}
	}
	p.smu.Unlock()
	p.signal()
	p.reconcileLocked(ctx)
	return nil
}

// reconcile makes Redis agree with what this node holds, for the pairs a
// failed call left unknown.
func (p *RedisPresence) reconcile(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reconcileLocked(ctx)
}

func (p *RedisPresence) reconcileLocked(ctx context.Context) {
	p.lmu.Lock()
	todo := make(map[chanSub]bool, len(p.unsure)) // pair -> held here
	for cs := range p.unsure {
		_, held := p.local[cs.ch][cs.sub]
		todo[cs] = held
	}
	p.lmu.Unlock()
	for cs, held := range todo {
		var err error
		if held {
			err = p.r.call(ctx, "presence.join", func(ctx context.Context) error {
				return p.r.client.Do(ctx, p.r.client.B().Sadd().Key(p.nodeKey(p.id, "chans")).Member(cs.ch).Build()).Error()
			})
			if err == nil {
				_, _, err = p.join(ctx, p.id, cs.ch, cs.sub)
			}
		} else {
			_, _, err = p.leave(ctx, p.id, cs.ch, cs.sub)
		}
		if err != nil {
			return // Redis is away: the next heartbeat tries again
		}
		p.lmu.Lock()
		delete(p.unsure, cs)
		p.lmu.Unlock()
	}
}

// heartbeat runs the node's periodic duties until Close.
func (p *RedisPresence) heartbeat() {
	defer p.wg.Done()
	t := time.NewTicker(p.hb)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.beat(context.Background())
	}
}

// beat refreshes the heartbeat (registering again if it was lost),
// retries what failed, and reaps the nodes whose heartbeat expired.
func (p *RedisPresence) beat(ctx context.Context) {
	p.mu.RLock()
	id := p.id
	p.mu.RUnlock()
	var lost bool
	err := p.r.call(ctx, "presence.heartbeat", func(ctx context.Context) error {
		err := p.r.client.Do(ctx, p.r.client.B().Set().Key(p.nodeKey(id, "alive")).Value(p.node).Xx().Px(p.ttl()).Build()).Error()
		if rueidis.IsRedisNil(err) {
			lost, err = true, nil
		}
		return err
	})
	if err != nil {
		p.alive.Store(false)
		return
	}
	if lost {
		if err := p.register(ctx); err != nil {
			p.alive.Store(false)
			return
		}
	}
	p.alive.Store(true)
	p.lmu.Lock()
	unsure := len(p.unsure) > 0
	p.lmu.Unlock()
	if unsure {
		p.reconcile(ctx)
	}
	p.signal()
	p.reap(ctx)
}

// reap removes the members and sessions of every node whose heartbeat
// expired.
func (p *RedisPresence) reap(ctx context.Context) {
	p.mu.RLock()
	self := p.id
	p.mu.RUnlock()
	var dead []string
	err := p.r.call(ctx, "presence.reap", func(ctx context.Context) error {
		c := p.r.client
		ids, err := c.Do(ctx, c.B().Smembers().Key(p.nodesKey()).Build()).AsStrSlice()
		if err != nil {
			return err
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == self })
		if len(ids) == 0 {
			return nil
		}
		cmds := make(rueidis.Commands, len(ids))
		for i, id := range ids {
			cmds[i] = c.B().Exists().Key(p.nodeKey(id, "alive")).Build()
		}
		for i, r := range c.DoMulti(ctx, cmds...) {
			n, err := r.AsInt64()
			if err != nil {
				return err
			}
			if n == 0 {
				dead = append(dead, ids[i])
			}
		}
		return nil
	})
	if err != nil {
		return
	}
	for _, id := range dead {
		if p.reapNode(ctx, id) != nil {
			return
		}
	}
}

// reapNode removes the dead node id: its members leave each channel (with
// their events), the channels that keep members get a new key (the node's
// encrypted sessions held the old one), and its sessions are forgotten.
// Another node may reap the same node at the same time: every step is
// atomic and idempotent.
func (p *RedisPresence) reapNode(ctx context.Context, id string) error {
	c := p.r.client
	var chans []string
	err := p.r.call(ctx, "presence.reap", func(ctx context.Context) error {
		var err error
		chans, err = c.Do(ctx, c.B().Smembers().Key(p.nodeKey(id, "chans")).Build()).AsStrSlice()
		return err
	})
	if err != nil {
		return err
	}
	for _, ch := range chans {
		var subs []string
		err := p.r.call(ctx, "presence.reap", func(ctx context.Context) error {
			var err error
			subs, err = c.Do(ctx, c.B().Smembers().Key(p.heldKey(ch, id)).Build()).AsStrSlice()
			return err
		})
		if err != nil {
			return err
		}
		args := []string{p.b.channelOf(ChannelTopic(ch))}
		for _, sub := range subs {
			ev, err := p.event(protocol.ActLeave, ch, sub)
			if err != nil {
				return err
			}
			args = append(args, sub, ev)
		}
		var res []int64
		err = p.r.call(ctx, "presence.reap", func(ctx context.Context) error {
			var err error
			res, err = reapScript.Exec(ctx, c, []string{p.membersKey(ch), p.heldKey(ch, id), p.keyKey(ch)}, args).AsIntSlice()
			if err == nil && len(res) != 3 {
				err = errors.New("unexpected reply")
			}
			return err
		})
		if err != nil {
			return err
		}
		if removed, left, version := res[0], res[1], res[2]; removed > 0 && left > 0 && version > 0 {
			if err := p.RotateKey(ctx, ch, uint64(version)); err != nil {
				return err
			}
		}
	}
	return p.r.call(ctx, "presence.reap", func(ctx context.Context) error {
		for _, r := range c.DoMulti(ctx,
			c.B().Del().Key(p.nodeKey(id, "chans"), p.nodeKey(id, "sessions"), p.nodeKey(id, "alive")).Build(),
			c.B().Srem().Key(p.nodesKey()).Member(id).Build()) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ready reports whether the node's last heartbeat was written.
func (p *RedisPresence) Ready() bool { return p.alive.Load() }

// Close stops the heartbeat and removes the node from Redis: whatever it
// still holds leaves (with events), and its sessions are forgotten. If
// Redis cannot be reached, the other nodes reap it once its heartbeat
// expires.
func (p *RedisPresence) Close() {
	p.once.Do(func() {
		close(p.done)
		p.wg.Wait()
		if p.sign == nil {
			return // never started
		}
		ctx := context.Background()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.lmu.Lock()
		var held []chanSub
		for ch, subs := range p.local {
			for sub := range subs {
				held = append(held, chanSub{ch, sub})
			}
		}
		p.local = map[string]map[string]struct{}{}
		p.lmu.Unlock()
		for _, cs := range held {
			if _, _, err := p.leave(ctx, p.id, cs.ch, cs.sub); err != nil {
				return
			}
		}
		_ = p.reapNode(ctx, p.id)
	})
}
