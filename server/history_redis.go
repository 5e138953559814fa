package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisHistory is the History of a cluster: each channel's stream is a
// Redis Stream, with its epoch and last offset in a hash beside it, both
// under the hash tag of the channel's broker partition:
//
//	<prefix>hs:{<n>}:s:<channel>    the stream: entry <offset>-0 {f: frame, t: Unix ms}
//	<prefix>hs:{<n>}:m:<channel>    {epoch, top}
//
// Publish allocates, signs and appends (spec.md §20.6): the node takes
// the next offset of the epoch it knows, signs the deliver frame with it,
// and runs one script that appends the frame (XADD, MAXLEN), records the
// offset and publishes it (SPUBLISH on the channel's broker channel) only
// if the offset is still the next one of that epoch; otherwise the script
// answers the stream's head and the node signs again. So the offset order
// is the order of the shard's pub/sub, the delivery order on every node.
// A node serialises its own publications to one channel, so that it
// retries only when another node published meanwhile; and it learns the
// offsets of the other nodes' publications from its own subscription to
// the channel (when it has one), so that it signs with an offset that is
// already past them.
//
// The epoch is made by the first node that needs the stream and lives with
// it: history survives a node's restart, and a Redis that lost the hash
// (a restart without persistence, FLUSHALL, or the channel's TTL passed
// with no publication) starts a new epoch, so that recovering clients are
// told recovered:false. Entries older than the channel's TTL are trimmed
// (XTRIM MINID) when the stream is written or read, and both keys expire
// after the TTL since the last publication. Build it with NewCluster.
type RedisHistory struct {
	b *RedisBroker
	r *Redis

	mu    sync.Mutex
	heads map[string]*redisHead
}

var _ History = (*RedisHistory)(nil)

// redisHead is this node's idea of a stream's head.
type redisHead struct {
	mu    sync.Mutex
	epoch string
	top   uint64
	seen  atomic.Uint64 // the greatest offset received from the broker
}

// maxAppendTries bounds the retries of one Publish against other nodes'
// publications to the same channel.
const maxAppendTries = 32

func newRedisHistory(b *RedisBroker) *RedisHistory {
	h := &RedisHistory{b: b, r: b.r, heads: map[string]*redisHead{}}
	b.offsets = h.observe
	return h
}

// observe records offset off of channel ch, received from the broker, in
// the head of ch if this node publishes to it. It never blocks on a
// publication in hand.
func (h *RedisHistory) observe(ch string, off uint64) {
	h.mu.Lock()
	hd := h.heads[ch]
	h.mu.Unlock()
	if hd == nil {
		return
	}
	for {
		seen := hd.seen.Load()
		if off <= seen || hd.seen.CompareAndSwap(seen, off) {
			return
		}
	}
}

// Start implements History; it publishes through the RedisBroker it was
// made with.
func (h *RedisHistory) Start(Broker) error { return nil }

func (h *RedisHistory) keys(ch string) []string {
	tag := h.b.partitionOf(streamTopic(ch)).tag
	return []string{h.r.key("hs", tag, "m", redisKeyPart(ch)), h.r.key("hs", tag, "s", redisKeyPart(ch))}
}

func (h *RedisHistory) head(ch string) *redisHead {
	h.mu.Lock()
	defer h.mu.Unlock()
	hd := h.heads[ch]
	if hd == nil {
		hd = &redisHead{}
		h.heads[ch] = hd
	}
	return hd
}

// Exists reports whether stream ch's head is in Redis (a Read or a
// Publish made it, and it has not expired); a head this node already
// knows is taken to exist without a round trip.
func (h *RedisHistory) Exists(ctx context.Context, ch string) (bool, error) {
	h.mu.Lock()
	hd := h.heads[ch]
	h.mu.Unlock()
	if hd != nil {
		hd.mu.Lock()
		known := hd.epoch != ""
		hd.mu.Unlock()
		if known {
			return true, nil
		}
	}
	var n int64
	err := h.r.call(ctx, "history.exists", func(ctx context.Context) error {
		var err error
		n, err = h.r.client.Do(ctx, h.r.client.B().Exists().Key(h.keys(ch)[0]).Build()).AsInt64()
		return err
	})
	return n > 0, err
}

// historyTrim is the Lua that drops the entries older than ARGV[3] (Unix
// ms; 0: none) from the stream KEYS[2], and makes the head if KEYS[1]
// has none (a new epoch ARGV[1], the stream dropped with the old one).
const historyTrim = `
local function head()
  local m = redis.call('HMGET', KEYS[1], 'epoch', 'top')
  if not m[1] then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'top', 0)
    return ARGV[1], 0
  end
  return m[1], tonumber(m[2])
end
local function trim(minT)
  if minT <= 0 then return end
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #first == 0 or tonumber(first[1][2][4]) >= minT then return end
  while true do
    local es = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
    if #es == 0 then return end
    for _, e in ipairs(es) do
      if tonumber(e[2][4]) >= minT then
        redis.call('XTRIM', KEYS[2], 'MINID', e[1])
        return
      end
    end
    local last = es[#es][1]
    redis.call('XTRIM', KEYS[2], 'MINID', (tonumber(string.match(last, '^(%d+)')) + 1) .. '-0')
  end
end
`

// appendScript: KEYS meta, stream, and the answer's key of the pub frame
// if it is recorded (outcomes_redis.go); ARGV new epoch, (unused), minT,
// epoch, offset, frame, now ms, maxlen, ttl ms, broker channel, the
// message's clearHead (the frame follows it) or, for an inbox, its whole
// sealed form, and outcomeRecord.args. It
// answers {1, subscribers} once appended and published (and the answer
// recorded), or {0, epoch, top} when the offset is not the next one of
// that epoch.
var appendScript = rueidis.NewLuaScript(historyTrim + outcomeRecordLua(3, 12) + `
local epoch, top = head()
if epoch ~= ARGV[4] or top + 1 ~= tonumber(ARGV[5]) then
  return {0, epoch, top}
end
trim(tonumber(ARGV[3]))
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[8], ARGV[5] .. '-0', 'f', ARGV[6], 't', ARGV[7])
redis.call('HSET', KEYS[1], 'top', ARGV[5])
local ttl = tonumber(ARGV[9])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local msg = ARGV[11]
if string.sub(msg, 1, 1) == 'c' then msg = msg .. ARGV[6] end
local n = redis.call('SPUBLISH', ARGV[10], msg)
record_outcome(n)
return {1, n}
`)

// readScript: KEYS meta, stream; ARGV new epoch, (unused), minT, mode
// (a: after, b: before, l: latest), offset, count. It answers {epoch,
// top, oldest offset or 0, entries}; for b and l the entries are newest
// first.
var readScript = rueidis.NewLuaScript(historyTrim + `
local epoch, top = head()
trim(tonumber(ARGV[3]))
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = 0
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
local n = tonumber(ARGV[6])
local es = {}
if n > 0 then
  local off = tonumber(ARGV[5])
  if ARGV[4] == 'a' then
    es = redis.call('XRANGE', KEYS[2], '(' .. off .. '-0', '+', 'COUNT', n)
  elseif ARGV[4] == 'b' then
    if off > 1 then es = redis.call('XREVRANGE', KEYS[2], '(' .. off .. '-0', '-', 'COUNT', n) end
  else
    es = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
  end
end
return {epoch, top, oldest, es}
`)

// minTime is the Unix ms before which entries are expired (0: no TTL).
func (h *RedisHistory) minTime(lim protocol.HistoryLimits) string {
	if lim.TTL <= 0 {
		return "0"
	}
	return strconv.FormatInt(h.r.now().Add(-lim.TTL).UnixMilli(), 10)
}

// Publish implements History.
func (h *RedisHistory) Publish(ctx context.Context, ch string, lim protocol.HistoryLimits, sign func(protocol.Position) ([]byte, error)) (_ protocol.Position, err error) {
	hd := h.head(ch)
	hd.mu.Lock()
	defer hd.mu.Unlock()
	keys := h.keys(ch)
	var outcome []string
	if rec := outcomeFor(ctx, ChannelTopic(ch)); rec != nil {
		var key string
		key, outcome = rec.args()
		keys = append(keys, key)
		defer func() { rec.recorded.Store(err == nil || errors.Is(err, ErrNoSubscribers)) }()
	}
	if hd.epoch == "" {
		page, err := h.Read(ctx, ch, lim, HistoryQuery{})
		if err != nil {
			return protocol.Position{}, err
		}
		hd.epoch, hd.top = page.Epoch, page.Top
	}
	bch := h.b.channelOf(streamTopic(ch))
	ttl := "0"
	if lim.TTL > 0 {
		ttl = strconv.FormatInt(lim.TTL.Milliseconds(), 10)
	}
	for range maxAppendTries {
		// Past what the broker brought meanwhile (of this epoch, unless it
		// just changed: then the script answers the head, seen is reset,
		// and the next try is right).
		hd.top = max(hd.top, hd.seen.Load())
		pos := protocol.Position{Epoch: hd.epoch, Offset: hd.top + 1}
		frame, err := sign(pos)
		if err != nil {
			return protocol.Position{}, err
		}
		// A channel's clear form is published as msg followed by the
		// frame, so the frame crosses to Redis once; an inbox's stored
		// direct message is sealed whole.
		msg := clearHead(ch, pos.Offset)
		if p := streamPublication(ch, frame, pos.Offset); p.Channel == nil {
			if msg, err = h.b.encode(p); err != nil {
				return protocol.Position{}, err
			}
		}
		var res []rueidis.RedisMessage
		err = h.r.call(ctx, "history.append", func(ctx context.Context) error {
			var err error
			res, err = appendScript.Exec(ctx, h.r.client, keys, append([]string{newEpoch(), "", h.minTime(lim),
				pos.Epoch, strconv.FormatUint(pos.Offset, 10), string(frame), strconv.FormatInt(h.r.now().UnixMilli(), 10),
				strconv.Itoa(lim.Size), ttl, bch, msg}, outcome...)).ToArray()
			return err
		})
		if err != nil {
			hd.epoch = "" // unknown now: read it again next time
			return protocol.Position{}, err
		}
		if len(res) < 2 {
			return protocol.Position{}, wrapRedis("history.append", errors.New("unexpected reply"))
		}
		if ok, _ := res[0].AsInt64(); ok == 1 {
			hd.top = pos.Offset
			if n, _ := res[1].AsInt64(); n == 0 {
				return pos, ErrNoSubscribers
			}
			return pos, nil
		}
		if len(res) != 3 {
			return protocol.Position{}, wrapRedis("history.append", errors.New("unexpected reply"))
		}
		hd.epoch, _ = res[1].ToString()
		top, _ := res[2].AsInt64()
		hd.top = uint64(top)
		hd.seen.Store(hd.top) // offsets of another epoch must not stay ahead
	}
	return protocol.Position{}, wrapRedis("history.append", fmt.Errorf("the head of %s moved %d times", ch, maxAppendTries))
}

// Read implements History.
func (h *RedisHistory) Read(ctx context.Context, ch string, lim protocol.HistoryLimits, q HistoryQuery) (*HistoryPage, error) {
	mode, off := "l", uint64(0)
	switch {
	case q.After != nil:
		mode, off = "a", *q.After
	case q.Before != nil:
		mode, off = "b", *q.Before
	}
	count := 0
	if q.Limit > 0 {
		count = q.Limit + 1 // one more tells whether there are more
	}
	var res []rueidis.RedisMessage
	err := h.r.call(ctx, "history.read", func(ctx context.Context) error {
		var err error
		res, err = readScript.Exec(ctx, h.r.client, h.keys(ch), []string{newEpoch(), "", h.minTime(lim),
			mode, strconv.FormatUint(off, 10), strconv.Itoa(count)}).ToArray()
		return err
	})
	if err != nil {
		return nil, err
	}
	bad := wrapRedis("history.read", errors.New("unexpected reply"))
	if len(res) != 4 {
		return nil, bad
	}
	p := &HistoryPage{}
	p.Epoch, _ = res[0].ToString()
	top, _ := res[1].AsInt64()
	oldest, _ := res[2].AsInt64()
	p.Top = uint64(top)
	p.Oldest = p.Top + 1
	if oldest > 0 {
		p.Oldest = uint64(oldest)
	}
	es, _ := res[3].ToArray()
	size := 0
	for _, e := range es {
		if len(p.Frames) == q.Limit {
			p.More = true
			break
		}
		sf, err := storedFrame(e)
		if err != nil {
			return nil, bad
		}
		if q.MaxBytes > 0 && len(p.Frames) > 0 && size+len(sf.Frame) > q.MaxBytes {
			p.More = true
			break
		}
		size += len(sf.Frame)
		p.Frames = append(p.Frames, sf)
	}
	if mode != "a" {
		for i, j := 0, len(p.Frames)-1; i < j; i, j = i+1, j-1 {
			p.Frames[i], p.Frames[j] = p.Frames[j], p.Frames[i]
		}
	}
	return p, nil
}

// storedFrame decodes one stream entry: [id, [f, frame, t, ms]].
func storedFrame(e rueidis.RedisMessage) (StoredFrame, error) {
	parts, err := e.ToArray()
	if err != nil || len(parts) != 2 {
		return StoredFrame{}, errors.New("entry")
	}
	id, _ := parts[0].ToString()
	fields, err := parts[1].AsStrSlice()
	if err != nil || len(fields) != 4 || fields[0] != "f" {
		return StoredFrame{}, errors.New("entry fields")
	}
	ms, _, _ := strings.Cut(id, "-")
	off, err := strconv.ParseUint(ms, 10, 64)
	if err != nil {
		return StoredFrame{}, err
	}
	return StoredFrame{Offset: off, Frame: []byte(fields[1])}, nil
}
