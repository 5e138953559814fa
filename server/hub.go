package server

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// hub holds this node's sessions and channels. Fan-out goes through the
// Broker: the hub publishes a Publication to a Topic and, as the broker's
// BrokerEventHandler, delivers what the broker hands back to its local
// sessions. Channel membership across nodes, channel keys and the session
// list are the Presence's; the hub counts its local sessions per subject
// and calls the presence at the first and the last of them.
//
// Locks: a topic lock (topicLock) serialises the changes of one topic's
// local membership together with the broker and presence calls they cause;
// then hub.mu; then conn.mu. The broker and the presence are called under
// a topic lock at most, never under hub.mu or conn.mu.
type hub struct {
	s *Server

	topics [64]sync.Mutex // by topicLock
	seed   maphash.Seed

	mu       sync.RWMutex
	all      map[*conn]struct{}
	users    map[string]map[*conn]struct{}
	channels map[string]*channel

	// writers hands a session with frames to write to a writer goroutine
	// waiting for one (conn_write.go); unbuffered.
	writers chan *conn
	// readers hands a parked session that has something to read to a
	// reader goroutine that finished with its own (conn_park.go).
	readers    chan resumed
	writerRuns atomic.Int64 // sessions handed to a writer goroutine (startWriter), for the tests

	leftMu sync.Mutex
	left   map[Topic]struct{} // topics whose broker Unsubscribe failed
	rotate map[string]uint64  // channels whose key rotation failed: the version to rotate from
}

type channel struct {
	name    string
	subs    map[*conn]struct{}
	members map[string]int // sub -> number of its sessions subscribed here
	key     *ChannelKey    // the current content key, once one was needed
	leaves  atomic.Uint64  // sessions taken out of subs so far (a fan-out's list is then stale)
}

func newHub(s *Server) *hub {
	return &hub{s: s, seed: maphash.MakeSeed(), writers: make(chan *conn), readers: make(chan resumed), all: map[*conn]struct{}{}, users: map[string]map[*conn]struct{}{},
		channels: map[string]*channel{}, left: map[Topic]struct{}{}, rotate: map[string]uint64{}}
}

// topicLock returns the lock of t (shared with the topics that hash alike).
func (h *hub) topicLock(t Topic) *sync.Mutex {
	return &h.topics[(maphash.String(h.seed, t.Name)+uint64(t.Kind))%uint64(len(h.topics))]
}

// brokerError logs and counts a failed broker call and returns it as the
// error frame that answers the frame which needed it.
func (h *hub) brokerError(op string, t Topic, err error) *protocol.Error {
	h.s.m.backendErrors.WithLabelValues("broker", op).Inc()
	h.s.log.Error("broker call failed", "op", op, "topic", t.String(), "err", err)
	return &protocol.Error{Code: protocol.CodeUnavailable, Message: "the broker is unavailable"}
}

// brokerSubscribe subscribes this node to t; the caller holds t's lock and
// this is the first local interest in t. A failure is logged and counted.
func (h *hub) brokerSubscribe(t Topic) *protocol.Error {
	if err := h.s.cfg.Broker.Subscribe(h.s.ctx, t); err != nil {
		return h.brokerError("subscribe", t, err)
	}
	h.leftMu.Lock()
	delete(h.left, t) // subscribed again, as it is wanted again
	h.leftMu.Unlock()
	return nil
}

// brokerUnsubscribe unsubscribes this node from t; the caller holds t's
// lock and the last local interest in t just ended. A failure does not
// undo the local change (the sessions have left); the topic is retried by
// retryUnsubscribes, and until then its publications reach no session.
func (h *hub) brokerUnsubscribe(t Topic) {
	if err := h.s.cfg.Broker.Unsubscribe(h.s.ctx, t); err != nil {
		h.brokerError("unsubscribe", t, err)
		h.leftMu.Lock()
		h.left[t] = struct{}{}
		h.leftMu.Unlock()
	}
}

// retryUnsubscribes retries the failed broker unsubscriptions of topics
// that still have no local interest. The sweeper calls it.
func (h *hub) retryUnsubscribes() {
	h.leftMu.Lock()
	left := slices.Collect(maps.Keys(h.left))
	h.leftMu.Unlock()
	for _, t := range left {
		tl := h.topicLock(t)
		tl.Lock()
		h.mu.RLock()
		wanted := (t.Kind == TopicChannel && h.channels[t.Name] != nil) || (t.Kind == TopicUser && h.users[t.Name] != nil)
		h.mu.RUnlock()
		h.leftMu.Lock()
		_, still := h.left[t]
		delete(h.left, t)
		h.leftMu.Unlock()
		if still && !wanted {
			h.brokerUnsubscribe(t)
		}
		tl.Unlock()
	}
}

// register makes c reachable: it joins the sessions of its subject, and
// the node subscribes to the subject's direct messages if c is the first.
// If that fails, c is not registered. c is then listed in the presence's
// session list.
func (h *hub) register(c *conn) *protocol.Error {
	t := UserTopic(c.sub)
	tl := h.topicLock(t)
	tl.Lock()
	defer tl.Unlock()
	h.mu.Lock()
	h.all[c] = struct{}{}
	u := h.users[c.sub]
	first := u == nil
	if first {
		u = map[*conn]struct{}{}
		h.users[c.sub] = u
	}
	u[c] = struct{}{}
	h.mu.Unlock()
	if first {
		if err := h.brokerSubscribe(t); err != nil {
			h.mu.Lock()
			delete(h.all, c)
			delete(h.users, c.sub) // c was its only session
			h.mu.Unlock()
			return err
		}
	}
	h.updateSession(c)
	return nil
}

// unregister removes c from its channels (leave, key rotation), from the
// sessions of its subject and from the presence's session list. It is
// idempotent.
func (h *hub) unregister(c *conn) {
	c.mu.Lock()
	chs := slices.Collect(maps.Keys(c.channels))
	c.mu.Unlock()
	for _, ch := range chs {
		h.unsubscribe(c, ch)
	}
	t := UserTopic(c.sub)
	tl := h.topicLock(t)
	tl.Lock()
	defer tl.Unlock()
	h.mu.Lock()
	delete(h.all, c)
	last := false
	if u := h.users[c.sub]; u != nil {
		if _, ok := u[c]; ok {
			delete(u, c)
			if last = len(u) == 0; last {
				delete(h.users, c.sub)
			}
		}
	}
	h.mu.Unlock()
	h.s.cfg.Presence.RemoveSession(c.regKey())
	if last {
		h.brokerUnsubscribe(t)
	}
}

// conns returns the registered connections matching pred (nil: all).
func (h *hub) conns(pred func(*conn) bool) []*conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*conn, 0, len(h.all))
	for c := range h.all {
		if pred == nil || pred(c) {
			out = append(out, c)
		}
	}
	return out
}

func (h *hub) sessions() []SessionInfo {
	cs := h.conns(nil)
	out := make([]SessionInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return a.ConnectedAt.Compare(b.ConnectedAt) })
	return out
}

// subscribe adds c to channel name: the node subscribes to the channel
// if c is its first local subscriber, and c's subject joins the channel's
// membership (Presence.Join, which publishes the join) if c is its first
// session here. It returns the members and, if c negotiated encryption,
// the channel's content key wrapped for c. Fan-out frames of the channel
// are held for c until the caller queues the answer to the sub
// (conn.releaseChannel). If the broker or the presence fails, everything is
// rolled back and the error is unavailable.
func (h *hub) subscribe(c *conn, name string) (members []string, wrapped string, err error) {
	t := ChannelTopic(name)
	tl := h.topicLock(t)
	tl.Lock()
	defer tl.Unlock()
	h.mu.Lock()
	ch := h.channels[name]
	first := ch == nil
	if first {
		ch = &channel{name: name, subs: map[*conn]struct{}{}, members: map[string]int{}}
		h.channels[name] = ch
	}
	_, already := ch.subs[c]
	localFirst := false
	if !already {
		ch.subs[c] = struct{}{}
		ch.members[c.sub]++
		localFirst = ch.members[c.sub] == 1
		c.holdChannel(name)
	}
	h.mu.Unlock()
	// undo takes c out again: the broker unsubscribes if c was the
	// channel's only subscriber here (and had been subscribed), and c's
	// subject leaves if it had joined.
	undo := func(subscribed, joined bool) {
		if !already {
			h.leaveLocked(c, ch, subscribed, joined, false)
			c.dropHold(name)
		}
	}
	if first {
		if perr := h.brokerSubscribe(t); perr != nil {
			undo(false, false)
			return nil, "", perr
		}
	}
	ctx := h.s.ctx
	if localFirst {
		members, _, err = h.s.cfg.Presence.Join(ctx, name, c.sub)
	} else {
		members, err = h.s.cfg.Presence.Members(ctx, name)
	}
	if err != nil {
		undo(true, false)
		return nil, "", h.presenceError("join", err)
	}
	if c.ekey != nil {
		k, err := h.currentKey(ctx, ch)
		if err == nil {
			c.keys.Add(k.Key, time.Time{})
			wrapped, err = protocol.WrapContentKey(k.Key, c.ekey)
		}
		if err != nil {
			undo(true, localFirst)
			return nil, "", h.presenceError("channel key", err)
		}
	}
	if !already {
		c.mu.Lock()
		if c.channels == nil {
			c.channels = map[string]struct{}{}
		}
		c.channels[name] = struct{}{}
		c.mu.Unlock()
	}
	return members, wrapped, nil
}

// presenceError logs and counts a failed presence call and returns it as
// the error frame that answers the frame which needed it.
func (h *hub) presenceError(op string, err error) *protocol.Error {
	h.s.storeError("presence "+op, err)
	return &protocol.Error{Code: protocol.CodeUnavailable, Message: "the presence store is unavailable"}
}

// unsubscribe removes c from channel name: its subject leaves if c was its
// last session here (Presence.Leave, which publishes the leave), the
// channel key is rotated if c held it and other sessions remain, and the
// node unsubscribes if c was the last local subscriber. It reports whether
// c was subscribed.
func (h *hub) unsubscribe(c *conn, name string) (was bool) {
	t := ChannelTopic(name)
	tl := h.topicLock(t)
	tl.Lock()
	defer tl.Unlock()
	h.mu.RLock()
	ch := h.channels[name]
	h.mu.RUnlock()
	if ch == nil {
		return false
	}
	return h.leaveLocked(c, ch, true, true, true)
}

// leaveLocked takes c out of ch; the caller holds the channel's topic
// lock. With leave, c's subject leaves the membership if c was its last
// session here; with rotate, the key is rotated if c held it and others
// remain subscribed; with unsub, the node unsubscribes if ch has no local
// subscriber left. It reports whether c was subscribed.
func (h *hub) leaveLocked(c *conn, ch *channel, unsub, leave, rotate bool) bool {
	h.mu.Lock()
	if _, ok := ch.subs[c]; !ok {
		h.mu.Unlock()
		return false
	}
	delete(ch.subs, c)
	ch.leaves.Add(1)
	c.mu.Lock()
	delete(c.channels, ch.name)
	c.mu.Unlock()
	localLast := false
	if ch.members[c.sub]--; ch.members[c.sub] <= 0 {
		delete(ch.members, c.sub)
		localLast = true
	}
	empty := len(ch.subs) == 0
	if empty {
		delete(h.channels, ch.name)
	}
	var from uint64
	if ch.key != nil {
		from = ch.key.Version
	}
	h.mu.Unlock()
	othersElsewhere := false
	if leave && localLast {
		_, remaining, err := h.s.cfg.Presence.Leave(h.s.ctx, ch.name, c.sub)
		if err != nil {
			h.presenceError("leave", err)
			remaining = 1 // in doubt, rotate
		}
		othersElsewhere = remaining > 0
	}
	if rotate && c.ekey != nil && from != 0 && (!empty || othersElsewhere) {
		h.rotateKey(ch.name, from)
	}
	if unsub && empty {
		h.brokerUnsubscribe(ChannelTopic(ch.name))
	}
	return true
}

// currentKey returns ch's content key: the one this node holds, or the
// presence's (made if ch has none), which it then holds.
func (h *hub) currentKey(ctx context.Context, ch *channel) (*ChannelKey, error) {
	h.mu.RLock()
	k := ch.key
	h.mu.RUnlock()
	if k != nil {
		return k, nil
	}
	k, err := h.s.cfg.Presence.ChannelKey(ctx, ch.name)
	if err != nil {
		return nil, err
	}
	h.installKey(k)
	h.mu.RLock()
	defer h.mu.RUnlock()
	if ch.key != nil && ch.key.Version > k.Version {
		return ch.key, nil // a newer one arrived meanwhile
	}
	return k, nil
}

// rotateKey asks the presence to replace channel name's key if it is still
// version from. A failure is logged and retried by the sweeper.
func (h *hub) rotateKey(name string, from uint64) {
	if err := h.s.cfg.Presence.RotateKey(h.s.ctx, name, from); err != nil {
		h.presenceError("rotate key", err)
		h.leftMu.Lock()
		h.rotate[name] = from
		h.leftMu.Unlock()
	}
}

// retryRotations retries the key rotations that failed. The sweeper calls
// it.
func (h *hub) retryRotations() {
	h.leftMu.Lock()
	jobs := maps.Clone(h.rotate)
	clear(h.rotate)
	h.leftMu.Unlock()
	for name, from := range jobs {
		h.rotateKey(name, from)
	}
}

// installKey makes k the channel's key on this node, unless the node holds
// the same or a newer one: every local encrypted subscriber gets it in its
// key ring (the previous key stays valid for KeyGrace) and, if it held a
// previous key, a key frame.
func (h *hub) installKey(k *ChannelKey) {
	h.mu.Lock()
	ch := h.channels[k.Channel]
	if ch == nil || (ch.key != nil && ch.key.Version >= k.Version) {
		h.mu.Unlock()
		return
	}
	old := ch.key
	ch.key = k
	var to []*conn
	grace := h.s.cfg.Now().Add(h.s.cfg.KeyGrace)
	for sc := range ch.subs {
		if sc.ekey != nil {
			sc.keys.Add(k.Key, time.Time{})
			if old != nil {
				sc.keys.Expire(old.Key.ID, grace)
			}
			to = append(to, sc)
		}
	}
	h.mu.Unlock()
	if old == nil {
		return // the channel's first key here: subscribers get it with their sub reply
	}
	for _, c := range to {
		wrapped, err := protocol.WrapContentKey(k.Key, c.ekey)
		if err != nil {
			continue
		}
		c.sendChannel(k.Channel, &protocol.Envelope{Action: protocol.ActKey, Channel: k.Channel}, protocol.KeyBody{Key: wrapped})
	}
}

// rotateOld rotates the channel keys older than ChannelKeyRotation. On a
// cluster every node holding the channel asks; the first one wins.
func (h *hub) rotateOld(now time.Time) {
	type job struct {
		name string
		from uint64
	}
	var jobs []job
	h.mu.RLock()
	for _, ch := range h.channels {
		if ch.key != nil && now.Sub(ch.key.Created) >= h.s.cfg.ChannelKeyRotation {
			jobs = append(jobs, job{ch.name, ch.key.Version})
		}
	}
	h.mu.RUnlock()
	for _, j := range jobs {
		h.rotateKey(j.name, j.from)
	}
}

// members returns the channel's members on every node.
func (h *hub) members(ctx context.Context, name string) ([]string, *protocol.Error) {
	m, err := h.s.cfg.Presence.Members(ctx, name)
	if err != nil {
		return nil, h.presenceError("members", err)
	}
	return m, nil
}

// presenceEvent is the PresenceSigner: the signed join or leave frame of
// sub in ch, as a channel publication.
func (h *hub) presenceEvent(act, ch, sub string) (*Publication, error) {
	frame, err := h.s.keys().signer.SignBody(&protocol.Envelope{Action: act, Channel: ch}, protocol.JoinBody{Sub: sub})
	if err != nil {
		return nil, err
	}
	return &Publication{Channel: &ChannelPublication{Channel: ch, Frame: frame}}, nil
}

// updateSession records c's current description with the presence.
func (h *hub) updateSession(c *conn) {
	h.s.cfg.Presence.SetSession(c.regKey(), c.info())
}

// interested reports whether anyone may receive t.
func (h *hub) interested(t Topic) bool {
	if ib, ok := h.s.cfg.Broker.(InterestBroker); ok {
		return ib.Interested(t)
	}
	return true
}

// publish signs one deliver frame and hands it to the broker. A broker
// failure is logged, counted and returned as unavailable.
func (h *hub) publish(ctx context.Context, name string, inner []byte, jwk []byte, sub string, logIndex int64) error {
	if lim, ok := h.s.history(name); ok {
		return h.publishHistory(ctx, name, lim, inner, jwk, sub, logIndex)
	}
	t := ChannelTopic(name)
	if !h.interested(t) {
		return nil
	}
	db := protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: sub, LogIndex: bodyLogIndex(logIndex)}
	frame, err := h.s.keys().signer.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: name}, db)
	if err != nil {
		return err
	}
	err = h.s.cfg.Broker.Publish(ctx, &Publication{Channel: &ChannelPublication{Channel: name, Frame: frame}})
	if err != nil && !errors.Is(err, ErrNoSubscribers) {
		return h.brokerError("publish", t, err)
	}
	return nil
}

// direct hands a direct message to the broker: not_found if no node has a
// session of the recipient (spec.md §9.5). If the recipient's inbox keeps
// history, an unencrypted dm is stored there instead (directHistory,
// §20.11). A broker failure is logged,
// counted and returned as unavailable.
func (h *hub) direct(ctx context.Context, d *DirectMessage) *protocol.Error {
	if lim, ok := h.s.history(protocol.InboxStream(d.To)); ok && d.Plain == nil {
		return h.directHistory(ctx, d, lim)
	}
	err := h.s.cfg.Broker.Publish(ctx, &Publication{Direct: d})
	if errors.Is(err, ErrNoSubscribers) {
		return &protocol.Error{Code: protocol.CodeNotFound, Message: "the recipient has no session"}
	}
	if err != nil {
		return h.brokerError("publish", UserTopic(d.To), err)
	}
	return nil
}

// HandleResync implements BrokerResyncHandler: publications of topics
// may have been lost, so the node reads the current key of each of those
// channels that it holds one of.
func (h *hub) HandleResync(topics []Topic) {
	for _, t := range topics {
		if t.Kind != TopicChannel {
			continue
		}
		h.mu.RLock()
		ch := h.channels[t.Name]
		has := ch != nil && ch.key != nil
		h.mu.RUnlock()
		if !has {
			continue
		}
		k, err := h.s.cfg.Presence.ChannelKey(h.s.ctx, t.Name)
		if err != nil {
			h.presenceError("channel key", err)
			continue
		}
		h.installKey(k)
	}
}

// HandlePublication implements BrokerEventHandler: it delivers p to the
// local sessions.
func (h *hub) HandlePublication(p *Publication) {
	switch {
	case p.Channel != nil:
		// One subscriber here: the frame as is; more: one
		// PreparedMessage shared by all. The subscribers are listed
		// under the hub's lock and written to after it, as deliverIn
		// may write: a fan-out does not hold up the hub.
		h.mu.RLock()
		ch := h.channels[p.Channel.Channel]
		if ch == nil {
			h.mu.RUnlock()
			return
		}
		name, leaves := ch.name, ch.leaves.Load()
		lp := fanoutPool.Get().(*[]*conn)
		subs := (*lp)[:0]
		for c := range ch.subs {
			subs = append(subs, c)
		}
		h.mu.RUnlock()
		f := outFrame{data: p.Channel.Frame, off: p.Channel.Offset}
		if len(subs) > 1 {
			pm, err := websocket.NewPreparedMessage(websocket.TextMessage, p.Channel.Frame)
			if err != nil {
				return
			}
			f = outFrame{pm: pm, wire: wireFrame(websocket.TextMessage, p.Channel.Frame), off: p.Channel.Offset}
		}
		n := 0
		for i, c := range subs {
			if c.deliverIn(name, f, ch.leaves.Load() == leaves) {
				n++
			}
			subs[i] = nil
		}
		*lp = subs[:0]
		if cap(subs) <= 1<<16 {
			fanoutPool.Put(lp)
		}
		h.s.m.deliveries.Add(float64(n))
	case p.Key != nil:
		h.installKey(p.Key)
	case p.Direct != nil:
		h.mu.RLock()
		var targets []*conn
		for c := range h.users[p.Direct.To] {
			targets = append(targets, c)
		}
		h.mu.RUnlock()
		if p.Direct.Offset > 0 {
			h.deliverStoredDirect(p.Direct, targets)
			return
		}
		h.deliverDirect(p.Direct, targets)
	}
}

// fanoutPool holds the lists of a channel's subscribers that
// HandlePublication writes to.
var fanoutPool = sync.Pool{New: func() any { s := make([]*conn, 0, 64); return &s }}

func (h *hub) deliverDirect(d *DirectMessage, targets []*conn) {
	signer := h.s.keys().signer
	db := protocol.DeliverBody{Frame: string(d.Frame), JWK: d.SenderJWK, Sub: d.Sender, LogIndex: d.LogIndex}
	var shared *websocket.PreparedMessage
	n := 0
	for _, c := range targets {
		if d.Plain == nil {
			if shared == nil {
				frame, err := signer.SignBody(&protocol.Envelope{Action: protocol.ActDirect, To: d.To}, db)
				if err != nil {
					return
				}
				if shared, err = websocket.NewPreparedMessage(websocket.TextMessage, frame); err != nil {
					return
				}
			}
			if c.enqueueIn(inboxHold, outFrame{pm: shared}) {
				n++
			}
			continue
		}
		// Encrypted dm: re-seal the body to each recipient session's key; a
		// session without one gets the delivery without a readable body.
		per := db
		if c.sessKey != nil {
			enc, err := protocol.SealBody(c.sessKey, d.Plain)
			if err != nil {
				continue
			}
			per.Enc = enc
		}
		frame, err := signer.SignBody(&protocol.Envelope{Action: protocol.ActDirect, To: d.To}, per)
		if err != nil {
			continue
		}
		if c.enqueueIn(inboxHold, outFrame{data: frame}) {
			n++
		}
	}
	h.s.m.deliveries.Add(float64(n))
}
