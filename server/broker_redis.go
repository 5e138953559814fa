package server

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisBroker is the Broker that carries publications between the nodes
// of a cluster through Redis sharded pub/sub (SPUBLISH, SSUBSCRIBE; Redis
// 7), on one Redis, through Sentinel, or on a Redis Cluster. Build it with
// NewCluster.
//
// Topics are spread over a fixed number of partitions
// (ClusterConfig.Partitions). A topic's Redis channel carries its
// partition's hash tag:
//
//	<prefix>ps:{<n>}:c:<channel>     a channel's publications
//	<prefix>ps:{<n>}:u:<subject>     a subject's direct messages
//
// so that all the channels of a partition live on one Cluster slot, and
// each node subscribes to them on one dedicated connection per partition.
// The presence's keys of a channel carry the same tag, so that a script
// can change them and publish the event that announces the change
// atomically (RedisPresence).
//
// Publish is one SPUBLISH (one round trip); it answers ErrNoSubscribers
// when Redis counted no subscribed node (the subscriptions of a shard
// channel all live on the primary that owns its slot, so the count covers
// every node). A channel publication crosses Redis as the signed frame
// every subscriber receives: Redis can neither forge nor alter one
// unnoticed, as clients verify it. A direct message or a content key is
// sealed (AES-256-GCM, JWE) under a key derived from ClusterConfig.Secret
// before it is published: Redis sees neither the body of an encrypted dm,
// nor a channel key, nor who sent what to whom, and cannot forge one. A
// sealed publication carries the time it was sealed; a node refuses one
// more than 90 seconds old or seen before, so that Redis cannot replay it
// later either.
//
// After a lost connection a partition reconnects by itself (with backoff)
// and subscribes again to the node's topics; Subscribe fails meanwhile
// (unavailable), and the hub is told which topics were interrupted
// (BrokerResyncHandler). Publications made while a node was not subscribed
// do not reach it: Redis pub/sub keeps nothing.
type RedisBroker struct {
	r     *Redis
	seal  *clusterSeal
	parts []*brokerPartition
	h     BrokerEventHandler
	// offsets, if set (by the RedisHistory made on the broker, before
	// Start), is told the offset of each channel publication received.
	offsets func(ch string, off uint64)

	mu     sync.Mutex
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

var _ Broker = (*RedisBroker)(nil)

// brokerPartition is one partition: its dedicated subscription
// connection and the topics subscribed on it.
type brokerPartition struct {
	b   *RedisBroker
	n   int
	tag string // "{n}"

	// mu serialises Subscribe, Unsubscribe and reconnection: the calls on
	// dc are made under it. The message hook never takes it.
	mu     sync.Mutex
	dc     rueidis.DedicatedClient // nil while disconnected
	topics map[Topic]string        // subscribed topics -> Redis channel

	// wanted is what the hook consults: the Redis channels that should
	// stay subscribed (a sunsubscribe of one of them means the
	// subscription was lost, as in a slot migration).
	wmu    sync.RWMutex
	wanted map[string]bool
}

// newRedisBroker returns a broker on r with the given number of
// partitions; Start connects it.
func newRedisBroker(r *Redis, seal *clusterSeal, partitions int) *RedisBroker {
	b := &RedisBroker{r: r, seal: seal, done: make(chan struct{})}
	for n := range partitions {
		b.parts = append(b.parts, &brokerPartition{b: b, n: n, tag: "{" + strconv.Itoa(n) + "}",
			topics: map[Topic]string{}, wanted: map[string]bool{}})
	}
	return b
}

// partitionOf returns the partition of t: stable across nodes (FNV-1a).
func (b *RedisBroker) partitionOf(t Topic) *brokerPartition {
	h := fnv.New32a()
	h.Write([]byte{byte(t.Kind)})
	h.Write([]byte(t.Name))
	return b.parts[h.Sum32()%uint32(len(b.parts))]
}

// channelOf returns t's Redis channel.
func (b *RedisBroker) channelOf(t Topic) string {
	kind := "c"
	if t.Kind == TopicUser {
		kind = "u"
	}
	return b.r.key("ps", b.partitionOf(t).tag, kind, redisKeyPart(t.Name))
}

// control is the partition's control channel, which every node subscribes
// to first: it pins the dedicated connection to the partition's slot and
// checks that the subscription works. Nothing is published on it.
func (p *brokerPartition) control() string { return p.b.r.key("ps", p.tag, "ctl") }

// Start implements Broker: it connects every partition, and fails if one
// cannot be subscribed within RedisConfig.OpTimeout.
func (b *RedisBroker) Start(h BrokerEventHandler) error {
	b.h = h
	for _, p := range b.parts {
		p.mu.Lock()
		err := p.connect()
		p.mu.Unlock()
		if err != nil {
			b.Close()
			return err
		}
	}
	return nil
}

// connect opens the partition's dedicated connection and subscribes to
// its control channel and its topics; the caller holds p.mu.
func (p *brokerPartition) connect() error {
	b := p.b
	dc, _ := b.r.client.Dedicate()
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: b.onMessage,
		OnSubscription: func(s rueidis.PubSubSubscription) {
			if s.Kind == "sunsubscribe" && p.isWanted(s.Channel) {
				go dc.Close() // lost (slot migration): reconnect and subscribe again
			}
		},
	})
	chans := []string{p.control()}
	p.wmu.RLock()
	for ch := range p.wanted {
		chans = append(chans, ch)
	}
	p.wmu.RUnlock()
	err := b.r.call(context.Background(), "broker.subscribe", func(ctx context.Context) error {
		return dc.Do(ctx, dc.B().Ssubscribe().Channel(chans...).Build()).Error()
	})
	if err != nil {
		dc.Close()
		return err
	}
	p.dc = dc
	b.wg.Add(1)
	go p.watch(dc, lost)
	return nil
}

// watch waits until the connection dc is lost, then reconnects (with
// backoff) until it succeeds or the broker is closed, and tells the hub
// which topics were interrupted.
func (p *brokerPartition) watch(dc rueidis.DedicatedClient, lost <-chan error) {
	b := p.b
	defer b.wg.Done()
	var err error
	select {
	case err = <-lost:
	case <-b.done:
		return
	}
	if err == nil {
		err = errors.New("subscription connection closed")
	}
	b.r.reportEvent("broker.connection_lost", 0, err)
	p.mu.Lock()
	if p.dc == dc {
		p.dc = nil
	}
	p.mu.Unlock()
	dc.Close()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-b.done:
			return
		case <-time.After(backoff):
		}
		p.mu.Lock()
		if b.isClosed() {
			p.mu.Unlock()
			return
		}
		err := p.connect()
		topics := make([]Topic, 0, len(p.topics))
		for t := range p.topics {
			topics = append(topics, t)
		}
		p.mu.Unlock()
		if err == nil {
			if rh, ok := b.h.(BrokerResyncHandler); ok && len(topics) > 0 {
				rh.HandleResync(topics)
			}
			return // the new connection has its own watcher
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (p *brokerPartition) isWanted(ch string) bool {
	p.wmu.RLock()
	defer p.wmu.RUnlock()
	return p.wanted[ch]
}

func (p *brokerPartition) setWanted(ch string, on bool) {
	p.wmu.Lock()
	if on {
		p.wanted[ch] = true
	} else {
		delete(p.wanted, ch)
	}
	p.wmu.Unlock()
}

// errNotConnected is the error of Subscribe while a partition reconnects.
var errNotConnected = errors.New("subscription connection down, reconnecting")

// Subscribe implements Broker: one SSUBSCRIBE on the partition's
// connection, which returns once Redis confirmed it.
func (b *RedisBroker) Subscribe(ctx context.Context, t Topic) error {
	p, ch := b.partitionOf(t), b.channelOf(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.topics[t]; ok {
		return nil
	}
	if p.dc == nil {
		return wrapRedis("broker.subscribe", errNotConnected)
	}
	p.setWanted(ch, true)
	err := b.r.call(ctx, "broker.subscribe", func(ctx context.Context) error {
		return p.dc.Do(ctx, p.dc.B().Ssubscribe().Channel(ch).Build()).Error()
	})
	if err != nil {
		p.setWanted(ch, false)
		return err
	}
	p.topics[t] = ch
	return nil
}

// Unsubscribe implements Broker: one SUNSUBSCRIBE. While the partition is
// disconnected there is nothing to undo: the topic is simply not
// subscribed again.
func (b *RedisBroker) Unsubscribe(ctx context.Context, t Topic) error {
	p := b.partitionOf(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, ok := p.topics[t]
	if !ok {
		return nil
	}
	delete(p.topics, t)
	p.setWanted(ch, false)
	if p.dc == nil {
		return nil
	}
	return b.r.call(ctx, "broker.unsubscribe", func(ctx context.Context) error {
		return p.dc.Do(ctx, p.dc.B().Sunsubscribe().Channel(ch).Build()).Error()
	})
}

// Publish implements Broker: one SPUBLISH.
func (b *RedisBroker) Publish(ctx context.Context, p *Publication) error {
	msg, err := b.encode(p)
	if err != nil {
		return err
	}
	ch := b.channelOf(p.Topic())
	rec := outcomeFor(ctx, p.Topic())
	var n int64
	err = b.r.call(ctx, "broker.publish", func(ctx context.Context) error {
		var err error
		if rec != nil {
			// The frame's answer is recorded in the same step (outcomes_redis.go).
			key, argv := rec.args()
			n, err = publishRecordScript.Exec(ctx, b.r.client, []string{key}, append([]string{ch, msg}, argv...)).AsInt64()
			return err
		}
		n, err = b.r.client.Do(ctx, b.r.client.B().Spublish().Channel(ch).Message(msg).Build()).AsInt64()
		return err
	})
	if err != nil {
		return err
	}
	if rec != nil {
		rec.recorded.Store(n > 0 || !rec.needSubs)
	}
	if n == 0 {
		return ErrNoSubscribers
	}
	return nil
}

// publishRecordScript publishes like Publish and records the answer of the
// pub or dm frame that made the publication: KEYS[1] the answer's key;
// ARGV[1] the Redis channel, ARGV[2] the message, ARGV[3..5] as
// outcomeRecord.args. It answers SPUBLISH's count.
var publishRecordScript = rueidis.NewLuaScript(outcomeRecordLua(1, 3) + `
local n = redis.call('SPUBLISH', ARGV[1], ARGV[2])
record_outcome(n)
return n
`)

// Publications cross Redis in one of two forms:
//
//	c <offset> NUL <channel> NUL <frame>   a channel publication, in the clear
//	s <sealed>                              a direct message or a channel key
//
// A channel publication's frame is server-signed and every client checks
// it, so it needs no sealing; its offset (decimal, 0 for none) is the
// frame's stream position (History). This form costs no JSON on the path
// of every publication on every node. The sealed form holds
// Publication.MarshalBinary's encoding.
const (
	wireClear  = 'c'
	wireSealed = 's'
)

// clearHead is the clear form of a publication of channel ch at offset
// off, up to its frame (which follows it).
func clearHead(ch string, off uint64) string {
	return string(wireClear) + strconv.FormatUint(off, 10) + "\x00" + ch + "\x00"
}

// encode returns what Publish sends for p.
func (b *RedisBroker) encode(p *Publication) (string, error) {
	if c := p.Channel; c != nil {
		if p.Direct != nil || p.Key != nil || !protocol.ValidChannel(c.Channel) || len(c.Frame) == 0 {
			return "", errors.New("sigil: a channel publication has exactly a valid channel and a frame")
		}
		return clearHead(c.Channel, c.Offset) + string(c.Frame), nil
	}
	data, err := p.MarshalBinary()
	if err != nil {
		return "", err
	}
	sealed, err := b.seal.seal(data)
	if err != nil {
		return "", err
	}
	return string(wireSealed) + sealed, nil
}

// decodeClear decodes a channel publication's clear form (after its 'c'):
// a canonical decimal offset, a valid channel name, a non-empty frame.
func decodeClear(rest string) (*Publication, error) {
	off, rest, ok1 := strings.Cut(rest, "\x00")
	ch, frame, ok2 := strings.Cut(rest, "\x00")
	n, err := strconv.ParseUint(off, 10, 64)
	if !ok1 || !ok2 || err != nil || strconv.FormatUint(n, 10) != off || !protocol.ValidChannel(ch) || frame == "" {
		return nil, errors.New("malformed channel publication")
	}
	return &Publication{Channel: &ChannelPublication{Channel: ch, Frame: []byte(frame), Offset: n}}, nil
}

// decode reverses encode; fresh checks the age of a sealed direct message
// and that it was not received before.
func (b *RedisBroker) decode(msg string, fresh bool) (*Publication, error) {
	if msg == "" {
		return nil, errors.New("empty message")
	}
	switch msg[0] {
	case wireClear:
		return decodeClear(msg[1:])
	case wireSealed:
		data, at, err := b.seal.open(msg[1:])
		if err != nil {
			return nil, err
		}
		var p Publication
		if err := p.UnmarshalBinary(data); err != nil {
			return nil, err
		}
		if p.Channel != nil {
			return nil, errors.New("a sealed channel publication")
		}
		if fresh && p.Direct != nil {
			if err := b.seal.fresh(msg[1:], at); err != nil {
				return nil, err
			}
		}
		return &p, nil
	}
	return nil, errors.New("unknown message form")
}

// onMessage hands a received publication to the hub. It runs on the
// partition connection's reader goroutine. A message that does not decode,
// or arrived on another topic's channel, is dropped and reported to
// RedisConfig.Observe and sigil_redis_errors_total as "broker.receive".
func (b *RedisBroker) onMessage(m rueidis.PubSubMessage) {
	p, err := b.decode(m.Message, true)
	if err == nil && b.channelOf(p.Topic()) != m.Channel {
		err = errors.New("publication on another topic's channel")
	}
	if err != nil {
		b.r.reportEvent("broker.receive", 0, err)
		return
	}
	if c := p.Channel; c != nil && c.Offset > 0 && b.offsets != nil {
		b.offsets(c.Channel, c.Offset)
	}
	b.h.HandlePublication(p)
}

// Ready reports whether every partition is subscribed: false while one
// reconnects.
func (b *RedisBroker) Ready() bool {
	for _, p := range b.parts {
		p.mu.Lock()
		up := p.dc != nil
		p.mu.Unlock()
		if !up {
			return false
		}
	}
	return true
}

func (b *RedisBroker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close closes the subscription connections. Publications are no longer
// received, and Subscribe fails.
func (b *RedisBroker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.done)
	b.mu.Unlock()
	for _, p := range b.parts {
		p.mu.Lock()
		if p.dc != nil {
			p.dc.Close()
			p.dc = nil
		}
		p.mu.Unlock()
	}
	b.wg.Wait()
}

// clusterSeal seals what nodes send each other through Redis under a key
// derived from the cluster's secret (ClusterConfig.Secret): JWE
// dir/A256GCM (protocol.SealBody), with the time of sealing inside.
type clusterSeal struct {
	key *protocol.ContentKey
	now func() time.Time

	mu      sync.Mutex
	seen    map[string]struct{} // IVs of the sealed messages received in this window...
	prev    map[string]struct{} // ...and in the previous one
	turnsAt time.Time
}

// A sealed direct message is accepted from sealAhead before its time of
// sealing (the nodes' clocks differ) until sealWindow - sealAhead after
// it, and remembered for at least sealWindow, so that it cannot be
// accepted twice.
const (
	sealWindow = 2 * time.Minute
	sealAhead  = 30 * time.Second
)

// clusterScope is the scope of the cluster's sealing key.
const clusterScope = "sigil-cluster"

// minSecret is the least length of ClusterConfig.Secret.
const minSecret = 32

func newClusterSeal(secret []byte, now func() time.Time) (*clusterSeal, error) {
	if len(secret) < minSecret {
		return nil, fmt.Errorf("sigil: ClusterConfig.Secret must be at least %d bytes", minSecret)
	}
	k, err := hkdf.Key(sha256.New, secret, nil, "sigil cluster seal v1", protocol.ContentKeySize)
	if err != nil {
		return nil, err
	}
	id, err := hkdf.Key(sha256.New, secret, nil, "sigil cluster seal id v1", 12)
	if err != nil {
		return nil, err
	}
	return &clusterSeal{key: &protocol.ContentKey{ID: "cluster-" + base64.RawURLEncoding.EncodeToString(id), Key: k, Scope: clusterScope},
		now: now, seen: map[string]struct{}{}, prev: map[string]struct{}{}}, nil
}

// ContentKey implements protocol.ContentKeys with the one sealing key.
func (s *clusterSeal) ContentKey(kid string) (*protocol.ContentKey, bool) {
	if kid != s.key.ID {
		return nil, false
	}
	return s.key, true
}

// sealedWire is the plaintext of a sealed message.
type sealedWire struct {
	T int64           `json:"t"` // when it was sealed, Unix ms
	P json.RawMessage `json:"p"` // the publication's encoding
}

func (s *clusterSeal) seal(data []byte) (string, error) {
	plain, err := json.Marshal(sealedWire{T: s.now().UnixMilli(), P: data})
	if err != nil {
		return "", err
	}
	return protocol.SealBody(s.key, plain)
}

// open checks and decrypts a sealed message; a key other than this
// node's means that the nodes do not share one Secret.
func (s *clusterSeal) open(enc string) ([]byte, time.Time, error) {
	plain, err := protocol.OpenBody(enc, s, clusterScope)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sealed message (do the nodes share one ClusterConfig.Secret?): %w", err)
	}
	var w sealedWire
	if err := protocol.DecodeBody(plain, &w); err != nil {
		return nil, time.Time{}, err
	}
	return w.P, time.UnixMilli(w.T), nil
}

// fresh refuses a sealed message outside its time window, or received
// before.
func (s *clusterSeal) fresh(enc string, at time.Time) error {
	now := s.now()
	if now.Sub(at) > sealWindow-sealAhead || at.Sub(now) > sealAhead {
		return errors.New("sealed message out of its time window")
	}
	segs := strings.Split(enc, ".")
	iv := segs[2] // OpenBody checked that there are five
	s.mu.Lock()
	defer s.mu.Unlock()
	if !now.Before(s.turnsAt) {
		s.prev, s.seen = s.seen, map[string]struct{}{}
		if now.Sub(s.turnsAt) >= sealWindow {
			clear(s.prev) // both windows are over
		}
		s.turnsAt = now.Add(sealWindow)
	}
	_, a := s.seen[iv]
	_, b := s.prev[iv]
	if a || b {
		return errors.New("sealed message received twice")
	}
	s.seen[iv] = struct{}{}
	return nil
}
