package server

import (
	"context"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// hub holds this node's sessions, channels and presence. Fan-out goes
// through the Broker: the hub publishes a Publication to a Topic and, as
// the broker's BrokerEventHandler, delivers what the broker hands back to
// its local sessions.
//
// Locks: a topic lock (topicLock) serialises the changes of one topic's
// local membership together with the broker Subscribe or Unsubscribe they
// cause; then hub.mu; then conn.mu. The broker is called under a topic
// lock at most, never under hub.mu or conn.mu.
type hub struct {
	s *Server

	topics [64]sync.Mutex // by topicLock
	seed   maphash.Seed

	mu       sync.RWMutex
	all      map[*conn]struct{}
	users    map[string]map[*conn]struct{}
	channels map[string]*channel

	leftMu sync.Mutex
	left   map[Topic]struct{} // topics whose broker Unsubscribe failed
}

type channel struct {
	name    string
	subs    map[*conn]struct{}
	members map[string]int // sub -> number of its sessions subscribed
	key     *protocol.ContentKey
	keyAt   time.Time
}

func newHub(s *Server) *hub {
	return &hub{s: s, seed: maphash.MakeSeed(), all: map[*conn]struct{}{}, users: map[string]map[*conn]struct{}{},
		channels: map[string]*channel{}, left: map[Topic]struct{}{}}
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
// If that fails, c is not registered.
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
	if !first {
		return nil
	}
	if err := h.brokerSubscribe(t); err != nil {
		h.mu.Lock()
		delete(h.all, c)
		delete(h.users, c.sub) // c was its only session
		h.mu.Unlock()
		return err
	}
	return nil
}

// unregister removes c from its channels (leave, key rotation) and from
// the sessions of its subject. It is idempotent.
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

// subscribe adds c to ch. It returns the members, the channel key wrapped
// for c (if c negotiated encryption) and whether c's subject just joined.
// If c is the channel's first local subscriber and the broker fails to
// subscribe the node, the change is rolled back and the error is
// unavailable.
func (h *hub) subscribe(c *conn, name string) (members []string, wrapped string, joined bool, err error) {
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
	if !already {
		ch.subs[c] = struct{}{}
		ch.members[c.sub]++
		joined = ch.members[c.sub] == 1
	}
	if first {
		h.mu.Unlock()
		if perr := h.brokerSubscribe(t); perr != nil {
			h.mu.Lock()
			delete(h.channels, name) // c was its only subscriber
			h.mu.Unlock()
			return nil, "", false, perr
		}
		h.mu.Lock()
	}
	if !already {
		c.mu.Lock()
		if c.channels == nil {
			c.channels = map[string]struct{}{}
		}
		c.channels[name] = struct{}{}
		c.mu.Unlock()
	}
	if c.ekey != nil {
		if ch.key == nil {
			if ch.key, err = protocol.NewContentKey(protocol.ChannelScope(name), nil); err != nil {
				h.mu.Unlock()
				return nil, "", false, err
			}
			ch.keyAt = h.s.cfg.Now()
		}
		c.keys.Add(ch.key, time.Time{})
		key := ch.key
		members = ch.memberList()
		h.mu.Unlock()
		wrapped, err = protocol.WrapContentKey(key, c.ekey)
		return members, wrapped, joined, err
	}
	members = ch.memberList()
	h.mu.Unlock()
	return members, "", joined, nil
}

// memberList is the channel's subjects, sorted; never nil.
func (ch *channel) memberList() []string {
	out := slices.AppendSeq(make([]string, 0, len(ch.members)), maps.Keys(ch.members))
	slices.Sort(out)
	return out
}

// unsubscribe removes c from ch, broadcasts leave if its subject left, and
// rotates the channel key for the remaining encrypted subscribers.
func (h *hub) unsubscribe(c *conn, name string) (was bool) {
	t := ChannelTopic(name)
	tl := h.topicLock(t)
	tl.Lock()
	h.mu.Lock()
	ch := h.channels[name]
	if ch == nil {
		h.mu.Unlock()
		tl.Unlock()
		return false
	}
	if _, ok := ch.subs[c]; !ok {
		h.mu.Unlock()
		tl.Unlock()
		return false
	}
	delete(ch.subs, c)
	c.mu.Lock()
	delete(c.channels, name)
	c.mu.Unlock()
	left := false
	if ch.members[c.sub]--; ch.members[c.sub] <= 0 {
		delete(ch.members, c.sub)
		left = true
	}
	last := len(ch.subs) == 0
	if last {
		delete(h.channels, name)
	}
	var rotate []*conn
	var newKey *protocol.ContentKey
	if c.ekey != nil && len(ch.subs) > 0 {
		newKey, rotate = h.rotateLocked(ch)
	}
	h.mu.Unlock()
	if last {
		h.brokerUnsubscribe(t)
	}
	tl.Unlock()
	h.sendKeys(ch, newKey, rotate)
	if left {
		h.presence(name, protocol.ActLeave, c.sub)
	}
	return true
}

// rotateLocked makes a new channel key and returns the encrypted
// subscribers to send it to. The old key stays valid for KeyGrace.
func (h *hub) rotateLocked(ch *channel) (*protocol.ContentKey, []*conn) {
	k, err := protocol.NewContentKey(protocol.ChannelScope(ch.name), nil)
	if err != nil {
		h.s.log.Error("channel key rotation failed", "ch", ch.name, "err", err)
		return nil, nil
	}
	old := ch.key
	ch.key, ch.keyAt = k, h.s.cfg.Now()
	var out []*conn
	grace := h.s.cfg.Now().Add(h.s.cfg.KeyGrace)
	for sc := range ch.subs {
		if sc.ekey != nil {
			sc.keys.Add(k, time.Time{})
			if old != nil {
				sc.keys.Expire(old.ID, grace)
			}
			out = append(out, sc)
		}
	}
	return k, out
}

func (h *hub) sendKeys(ch *channel, k *protocol.ContentKey, to []*conn) {
	for _, c := range to {
		wrapped, err := protocol.WrapContentKey(k, c.ekey)
		if err != nil {
			continue
		}
		c.sendSigned(&protocol.Envelope{Action: protocol.ActKey, Channel: ch.name}, protocol.KeyBody{Key: wrapped})
	}
}

// rotateOld rotates channel keys older than ChannelKeyRotation.
func (h *hub) rotateOld(now time.Time) {
	type job struct {
		ch *channel
		k  *protocol.ContentKey
		to []*conn
	}
	var jobs []job
	h.mu.Lock()
	for _, ch := range h.channels {
		if ch.key != nil && now.Sub(ch.keyAt) >= h.s.cfg.ChannelKeyRotation {
			k, to := h.rotateLocked(ch)
			jobs = append(jobs, job{ch, k, to})
		}
	}
	h.mu.Unlock()
	for _, j := range jobs {
		h.sendKeys(j.ch, j.k, j.to)
	}
}

func (h *hub) members(name string) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if ch := h.channels[name]; ch != nil {
		return ch.memberList()
	}
	return []string{}
}

// presence broadcasts join or leave to the channel. It answers no frame of
// its own (the sub or unsub that caused it is answered already), so a
// broker failure is only logged and counted.
func (h *hub) presence(name, act, sub string) {
	frame, err := h.s.keys().signer.SignBody(&protocol.Envelope{Action: act, Channel: name}, protocol.JoinBody{Sub: sub})
	if err != nil {
		h.s.log.Error("signing a presence frame failed", "err", err)
		return
	}
	t := ChannelTopic(name)
	if err := h.s.cfg.Broker.Publish(h.s.ctx, &Publication{Channel: &ChannelPublication{Channel: name, Frame: frame}}); err != nil {
		h.brokerError("publish", t, err)
	}
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
func (h *hub) publish(ctx context.Context, name string, inner []byte, jwk []byte, sub string) error {
	t := ChannelTopic(name)
	if !h.interested(t) {
		return nil
	}
	db := protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: sub}
	frame, err := h.s.keys().signer.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: name}, db)
	if err != nil {
		return err
	}
	if err := h.s.cfg.Broker.Publish(ctx, &Publication{Channel: &ChannelPublication{Channel: name, Frame: frame}}); err != nil {
		return h.brokerError("publish", t, err)
	}
	return nil
}

// direct hands a direct message to the broker. A broker failure is
// logged, counted and returned as unavailable.
func (h *hub) direct(ctx context.Context, d *DirectMessage) *protocol.Error {
	if err := h.s.cfg.Broker.Publish(ctx, &Publication{Direct: d}); err != nil {
		return h.brokerError("publish", UserTopic(d.To), err)
	}
	return nil
}

// HandlePublication implements BrokerEventHandler: it delivers p to the
// local sessions.
func (h *hub) HandlePublication(p *Publication) {
	switch {
	case p.Channel != nil:
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, p.Channel.Frame)
		if err != nil {
			return
		}
		n := 0
		h.mu.RLock()
		if ch := h.channels[p.Channel.Channel]; ch != nil {
			for c := range ch.subs {
				if c.enqueue(outFrame{pm: pm}) {
					n++
				}
			}
		}
		h.mu.RUnlock()
		h.s.m.deliveries.Add(float64(n))
	case p.Direct != nil:
		h.mu.RLock()
		var targets []*conn
		for c := range h.users[p.Direct.To] {
			targets = append(targets, c)
		}
		h.mu.RUnlock()
		h.deliverDirect(p.Direct, targets)
	}
}

func (h *hub) deliverDirect(d *DirectMessage, targets []*conn) {
	signer := h.s.keys().signer
	db := protocol.DeliverBody{Frame: string(d.Frame), JWK: d.SenderJWK, Sub: d.Sender}
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
			if c.enqueue(outFrame{pm: shared}) {
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
		if c.enqueue(outFrame{data: frame}) {
			n++
		}
	}
	h.s.m.deliveries.Add(float64(n))
}
