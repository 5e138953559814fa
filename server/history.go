package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-ws/sigil/protocol"
)

// History keeps the streams of the channels that have history (spec.md
// §20): each publication gets the next position of its channel's stream,
// the deliver frame is signed with that position inside it, stored, and
// handed to the broker, as one step, so that the order of offsets is the
// order of delivery on every node.
//
// Contract (MemoryHistory is the reference):
//
//   - Start is called once, by New, with the server's broker, before any
//     other method.
//   - Publish allocates the stream's next position, calls sign with it,
//     stores the frame sign returned and publishes it (a
//     ChannelPublication with the frame's Offset) to every node
//     subscribed to the channel. A frame is stored if and only if it was
//     published; ErrNoSubscribers is not a failure (the frame is stored).
//     Any other error means that nothing was stored or delivered.
//   - Read returns a consistent page of a stream: its epoch, its last
//     offset (Top), the offset of the oldest frame it still keeps, and the
//     frames asked for, in offset order. A stream that does not exist yet
//     is created empty (with its epoch), so that a subscriber learns the
//     epoch its later frames will carry.
//   - The epoch changes whenever the stream lost frames other than by its
//     limits (a restart of the memory engine, a loss of Redis' data).
type History interface {
	// Start sets the broker that Publish hands frames to.
	Start(b Broker) error
	// Publish appends one frame to channel ch's stream and publishes it.
	Publish(ctx context.Context, ch string, lim protocol.HistoryLimits, sign func(protocol.Position) ([]byte, error)) (protocol.Position, error)
	// Read reads a page of ch's stream.
	Read(ctx context.Context, ch string, lim protocol.HistoryLimits, q HistoryQuery) (*HistoryPage, error)
}

// HistoryQuery selects frames of a stream: with After, the oldest Limit
// frames whose offsets are greater; with Before, the newest Limit frames
// whose offsets are smaller; with neither, the newest Limit frames. Limit
// 0 reads no frame (only the stream's position). MaxBytes, if positive,
// cuts the page once its frames exceed it (at least one frame is
// returned).
type HistoryQuery struct {
	After    *uint64
	Before   *uint64
	Limit    int
	MaxBytes int
}

// HistoryPage is what Read returns. Frames are in offset order; More
// reports that Limit or MaxBytes cut the page and more frames lie in the
// direction read.
type HistoryPage struct {
	Epoch  string
	Top    uint64 // the offset of the stream's last publication (0: none yet)
	Oldest uint64 // the offset of the oldest frame kept (Top+1 when none is)
	Frames []StoredFrame
	More   bool
}

// StoredFrame is one stored deliver frame and its offset.
type StoredFrame struct {
	Offset uint64
	Frame  []byte
}

// HistoryStats are a history engine's totals, exported as metrics.
type HistoryStats struct {
	Streams int   // streams held
	Frames  int   // frames held
	Bytes   int64 // bytes of those frames
}

// streamExister is implemented by engines that can tell whether a stream
// exists: it was created by a Read or a Publish, and (Redis) has not
// expired since. Both engines implement it; with an engine that does not,
// every inbox is taken to exist.
type streamExister interface {
	Exists(ctx context.Context, name string) (bool, error)
}

// historyStatser is implemented by engines that can count what they hold
// without a network round trip (MemoryHistory).
type historyStatser interface {
	Stats() HistoryStats
}

// newEpoch returns a random epoch: 16 base64url characters (96 bits).
func newEpoch() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Defaults of the recovery bounds (Config.MaxRecovery, the history
// action's page).
const (
	DefaultMaxRecovery  = 10000
	defaultHistoryPage  = 100
	historyBatchBytes   = 512 << 10 // bytes of stored frames per history frame or reply
	historyMetricPrefix = "sigil_history_"
)

// registerHistoryMetrics exports the engine's totals, if it can count
// them: sigil_history_streams, sigil_history_frames and
// sigil_history_bytes.
func registerHistoryMetrics(reg prometheus.Registerer, h History) error {
	st, ok := h.(historyStatser)
	if !ok {
		return nil
	}
	gauge := func(name, help string, f func(HistoryStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: historyMetricPrefix + name, Help: help},
			func() float64 { return f(st.Stats()) })
	}
	for _, c := range []prometheus.Collector{
		gauge("streams", "Channel streams held in memory.", func(s HistoryStats) float64 { return float64(s.Streams) }),
		gauge("frames", "Stored deliver frames held in memory.", func(s HistoryStats) float64 { return float64(s.Frames) }),
		gauge("bytes", "Bytes of the stored deliver frames held in memory.", func(s HistoryStats) float64 { return float64(s.Bytes) }),
	} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}

// inboxHold is the key of conn.holds under which a session's direct
// frames are held while its inbox is recovered (no channel is named so).
const inboxHold = protocol.InboxPattern

// streamTopic is the topic that stream name's publications go to: the
// channel's, or for an inbox stream (protocol.InboxStream) its user's.
func streamTopic(name string) Topic {
	if sub, ok := strings.CutPrefix(name, protocol.InboxPattern); ok {
		return UserTopic(sub)
	}
	return ChannelTopic(name)
}

// streamPublication is the publication of frame, stored at offset off of
// stream name: a ChannelPublication, or a stored DirectMessage.
func streamPublication(name string, frame []byte, off uint64) *Publication {
	if sub, ok := strings.CutPrefix(name, protocol.InboxPattern); ok {
		return &Publication{Direct: &DirectMessage{To: sub, Signed: frame, Offset: off}}
	}
	return &Publication{Channel: &ChannelPublication{Channel: name, Frame: frame, Offset: off}}
}

// history returns the limits of channel ch, and whether it has history
// on this server.
func (s *Server) history(ch string) (protocol.HistoryLimits, bool) {
	if s.cfg.History == nil {
		return protocol.HistoryLimits{}, false
	}
	lim := s.cfg.Policy.History(ch)
	return lim, lim.Size > 0
}

// signDeliver returns the sign function of a channel publication: the
// deliver frame of the sender's frame inner, with its position.
func (h *hub) signDeliver(name string, inner, jwk []byte, sub string, logIndex int64) func(protocol.Position) ([]byte, error) {
	return func(pos protocol.Position) ([]byte, error) {
		db := protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: sub, Epoch: pos.Epoch, Offset: pos.Offset, LogIndex: bodyLogIndex(logIndex)}
		return h.s.keys().signer.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: name}, db)
	}
}

// publishHistory is hub.publish for a channel with history: the frame is
// stored, whether or not anyone is subscribed.
func (h *hub) publishHistory(ctx context.Context, name string, lim protocol.HistoryLimits, inner, jwk []byte, sub string, logIndex int64) error {
	_, err := h.s.cfg.History.Publish(ctx, name, lim, h.signDeliver(name, inner, jwk, sub, logIndex))
	if err != nil && !errors.Is(err, ErrNoSubscribers) {
		return h.historyError("publish", name, err)
	}
	return nil
}

// historyError logs and counts a failed history call and returns it as the
// error frame that answers the frame which needed it.
func (h *hub) historyError(op, ch string, err error) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	h.s.m.backendErrors.WithLabelValues("history", op).Inc()
	h.s.log.Error("history call failed", "op", op, "channel", ch, "err", err)
	return &protocol.Error{Code: protocol.CodeUnavailable, Message: "the history store is unavailable"}
}

// recoverSub completes a sub of channel ch that c was just added to (its
// fan-out frames are held): it fills rb's stream position and, when
// since is set, whether the publications after since are recovered, and
// returns the history frames that carry them. The caller queues the
// reply, the history frames, then the held frames with greater offsets
// (releaseRecovered).
func (c *conn) recoverSub(m *protocol.Message, since *protocol.Position, rb *protocol.SubReplyBody) (batches [][]byte, top uint64, positioned bool, perr *protocol.Error) {
	s := c.srv
	ch := m.Channel
	lim, ok := s.history(ch)
	recovered := false
	if since != nil {
		rb.Recovered = &recovered
	}
	if !ok {
		return nil, 0, false, nil
	}
	allowed := since != nil
	if allowed {
		c.mu.Lock()
		roles := c.roles
		c.mu.Unlock()
		allowed = s.cfg.Policy.Allow(protocol.ActHistory, ch, roles) == nil
	}
	pos, frames, recovered, perr := s.readRecovery(ch, lim, since, allowed)
	if perr != nil {
		return nil, 0, false, perr
	}
	rb.Stream = &pos
	if !recovered {
		return nil, pos.Offset, true, nil
	}
	return c.historyFrames(m, frames), pos.Offset, true, nil
}

// readRecovery reads stream name for a subscriber that had since (nil:
// none) and may read the stream's history if allowed: the stream's
// position, and whether frames are every publication after since up to
// it, within the server's bound (spec.md §20.3).
func (s *Server) readRecovery(name string, lim protocol.HistoryLimits, since *protocol.Position, allowed bool) (protocol.Position, []StoredFrame, bool, *protocol.Error) {
	allowed = allowed && since != nil
	q := HistoryQuery{}
	if allowed {
		after := since.Offset
		q = HistoryQuery{After: &after, Limit: s.cfg.MaxRecovery + 1}
	}
	page, err := s.cfg.History.Read(s.ctx, name, lim, q)
	if err != nil {
		return protocol.Position{}, nil, false, s.hub.historyError("read", name, err)
	}
	pos := protocol.Position{Epoch: page.Epoch, Offset: page.Top}
	if !allowed {
		return pos, nil, false, nil
	}
	missed := page.Top - min(since.Offset, page.Top)
	recovered := since.Epoch == page.Epoch && since.Offset <= page.Top &&
		page.Oldest <= since.Offset+1 && missed <= uint64(s.cfg.MaxRecovery) && uint64(len(page.Frames)) == missed
	if !recovered {
		return pos, nil, false, nil
	}
	return pos, page.Frames, true, nil
}

// signDirect returns the sign function of a dm stored in the inbox
// stream of d.To: the direct frame of d, with its position.
func (h *hub) signDirect(d *DirectMessage) func(protocol.Position) ([]byte, error) {
	return func(pos protocol.Position) ([]byte, error) {
		db := protocol.DeliverBody{Frame: string(d.Frame), JWK: d.SenderJWK, Sub: d.Sender, Epoch: pos.Epoch, Offset: pos.Offset, LogIndex: d.LogIndex}
		return h.s.keys().signer.SignBody(&protocol.Envelope{Action: protocol.ActDirect, To: d.To}, db)
	}
}

// directHistory is hub.direct for a recipient whose inbox keeps history
// (spec.md §20.11): the direct frame is signed once, with its position,
// stored and published to every session of d.To, whether or not the
// recipient has one (it recovers the dm when it returns).
func (h *hub) directHistory(ctx context.Context, d *DirectMessage, lim protocol.HistoryLimits) *protocol.Error {
	name := protocol.InboxStream(d.To)
	// Only a subject whose inbox exists (it said hello since the store
	// began) gets stored dms: a sender cannot make the server keep a
	// stream per made-up name.
	if ex, ok := h.s.cfg.History.(streamExister); ok {
		known, err := ex.Exists(ctx, name)
		if err != nil {
			return h.historyError("exists", name, err)
		}
		if !known {
			return &protocol.Error{Code: protocol.CodeNotFound, Message: "the recipient has no session and no inbox"}
		}
	}
	_, err := h.s.cfg.History.Publish(ctx, name, lim, h.signDirect(d))
	if err != nil && !errors.Is(err, ErrNoSubscribers) {
		return h.historyError("publish", name, err)
	}
	return nil
}

// deliverStoredDirect queues a stored dm's signed direct frame, as is, to
// each of targets (held while a session's inbox is being recovered).
func (h *hub) deliverStoredDirect(d *DirectMessage, targets []*conn) {
	f := outFrame{data: d.Signed, off: d.Offset}
	if len(targets) > 1 {
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, d.Signed)
		if err != nil {
			return
		}
		f = outFrame{pm: pm, off: d.Offset}
	}
	n := 0
	for _, c := range targets {
		if c.enqueueIn(inboxHold, f) {
			n++
		}
	}
	h.s.m.deliveries.Add(float64(n))
}

// holdInbox starts holding c's direct frames if its subject's inbox keeps
// history: the hello calls it before it registers c, and recoverInbox
// releases them after the recovered ones.
func (c *conn) holdInbox() bool {
	if _, ok := c.srv.history(protocol.InboxStream(c.sub)); !ok {
		return false
	}
	c.holdChannel(inboxHold)
	return true
}

// recoverInbox completes the hello m of a session whose inbox keeps
// history (spec.md §20.11): it reads the inbox stream, with the hello's
// inbox_since if any, signs the welcome wb again with the inbox's
// position (and whether the dms after inbox_since are recovered) in place
// of the one queued, then queues the history frames and the direct
// frames held meanwhile that follow them.
func (c *conn) recoverInbox(m *protocol.Message, wb *protocol.WelcomeBody) *protocol.Error {
	s := c.srv
	name := protocol.InboxStream(c.sub)
	lim, _ := s.history(name)
	var hb protocol.HelloBody
	_ = protocol.DecodeBody(m.Body, &hb) // VerifyHello decoded it
	pos, frames, recovered, perr := s.readRecovery(name, lim, hb.InboxSince, true)
	if perr != nil {
		return perr
	}
	wb.Inbox = &pos
	if hb.InboxSince != nil {
		wb.InboxRecovered = &recovered
	}
	welcome, err := s.keys().signer.SignBody(&protocol.Envelope{Action: protocol.ActWelcome, Session: c.sid, Corr: m.Corr}, wb)
	if err != nil {
		return &protocol.Error{Code: protocol.CodeInternal, Message: "signing failed"}
	}
	c.mu.Lock()
	for i := range c.queue {
		if c.queue[i].keep {
			c.queue[i].data = welcome
			break
		}
	}
	c.mu.Unlock()
	var batches [][]byte
	if recovered {
		batches = c.historyFrames(m, frames)
	}
	c.releaseRecovered(inboxHold, nil, batches, pos.Offset)
	return nil
}

// historyFrames signs the history frames that carry frames to c, in
// batches of at most historyBatchBytes of stored frames.
func (c *conn) historyFrames(m *protocol.Message, frames []StoredFrame) [][]byte {
	var out [][]byte
	for len(frames) > 0 {
		n, size := 0, 0
		for n < len(frames) && (n == 0 || size+len(frames[n].Frame) <= historyBatchBytes) {
			size += len(frames[n].Frame)
			n++
		}
		body := protocol.HistoryBody{Frames: make([]string, n)}
		for i := range n {
			body.Frames[i] = string(frames[i].Frame)
		}
		if f := c.sign(&protocol.Envelope{Action: protocol.ActHistory, Channel: m.Channel, Corr: m.Corr}, body); f != nil {
			out = append(out, f)
		}
		frames = frames[n:]
	}
	return out
}

// releaseRecovered is releaseChannel for a sub of a channel with history:
// it queues the reply, the history frames, then the frames held for ch
// meanwhile, without the deliveries at or before top (they are in the
// history frames, or came before the position the reply announces).
func (c *conn) releaseRecovered(ch string, answer []byte, batches [][]byte, top uint64) {
	c.mu.Lock()
	held := c.holds[ch]
	c.unholdLocked(ch)
	if c.closed {
		c.mu.Unlock()
		return
	}
	out := make([]outFrame, 0, 1+len(batches)+len(held))
	if answer != nil {
		out = append(out, outFrame{data: answer})
	}
	for _, b := range batches {
		out = append(out, outFrame{data: b})
	}
	for _, f := range held {
		if f.off == 0 || f.off > top {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		c.mu.Unlock()
		return
	}
	c.pushLocked(out...)
}

// isHeld reports whether c holds ch's frames: a sub of ch is being
// answered that added c to the channel.
func (c *conn) isHeld(ch string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.holds[ch]
	return ok
}

// readHistory answers a history action (spec.md §20.5).
func (c *conn) readHistory(m *protocol.Message) *protocol.Error {
	s := c.srv
	name := m.Channel
	if m.Channel == "" {
		name = protocol.InboxStream(m.To) // the session's own (spec.md §20.11)
	}
	lim, ok := s.history(name)
	if !ok {
		return &protocol.Error{Code: protocol.CodeNotFound, Message: "the channel keeps no history"}
	}
	req, err := protocol.ParseHistoryRequest(m.Body)
	if err != nil {
		return err.(*protocol.Error)
	}
	q := HistoryQuery{After: req.After, Before: req.Before, Limit: req.Limit, MaxBytes: historyBatchBytes}
	if q.Limit == 0 {
		q.Limit = defaultHistoryPage
	}
	page, rerr := s.cfg.History.Read(s.ctx, name, lim, q)
	if rerr != nil {
		return s.hub.historyError("read", name, rerr)
	}
	body := protocol.HistoryReplyBody{Epoch: page.Epoch, Top: page.Top, Frames: make([]string, len(page.Frames)), More: page.More}
	for i, f := range page.Frames {
		body.Frames[i] = string(f.Frame)
	}
	c.reply(m, body, true)
	return nil
}
