package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sigil-ws/sigil/protocol"
)

// Position is a place in a channel's stream (spec.md §20): the stream's
// epoch and the offset of a publication. Messages of a channel with
// history carry one (Message.Position); a service that saves the position
// of the last message it processed resumes after it with Since.
type Position = protocol.Position

// Gap reports that a subscription could not receive every publication of
// its channel (Channel "": the Inbox could not receive every direct
// message): between From, the last position it had, and To, the
// position it continues after, publications may be missing. It happens
// when the server answers a recovery with recovered:false (the stream's
// epoch changed, From fell out of its window, or the gap is over the
// server's recovery bound), when the client may not read the channel's
// history, and when live offsets jump. The messages in between can be
// paged with Client.History while they are kept.
type Gap struct {
	Channel string
	From    Position // the last position received (zero if none)
	To      Position // the stream's position the subscription continues after
}

// GapError is the error that reports a Gap to Options.OnError when the
// subscription has no OnGap callback.
type GapError struct{ Gap Gap }

func (e *GapError) Error() string {
	if e.Gap.Channel == "" {
		return fmt.Sprintf("sigil client: inbox: direct messages between %v and %v may be missing", e.Gap.From, e.Gap.To)
	}
	return fmt.Sprintf("sigil client: %s: publications between %v and %v may be missing", e.Gap.Channel, e.Gap.From, e.Gap.To)
}

// ErrNotRecovered matches every *GapError (errors.Is).
var ErrNotRecovered = errors.New("sigil client: publications could not be recovered")

// Is makes errors.Is(err, ErrNotRecovered) true.
func (e *GapError) Is(target error) bool { return target == ErrNotRecovered }

// SubscribeOption configures Subscribe.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct {
	since *Position
	onGap func(Gap)
}

// Since makes the subscription start after p: the server first sends the
// channel's publications after p, then the live ones (spec.md §20.3). It
// applies to the client's first subscription to the channel; a later one
// shares the live stream of the first.
func Since(p Position) SubscribeOption {
	return func(o *subscribeOptions) { o.since = &p }
}

// OnGap sets the function called, in order with the messages, when the
// subscription cannot receive every publication (see Gap). Without it, a
// gap is reported to Options.OnError as a *GapError.
func OnGap(f func(Gap)) SubscribeOption {
	return func(o *subscribeOptions) { o.onGap = f }
}

// Position returns the message's position in its channel's stream, or
// the zero Position if the channel has no history (and for direct
// messages).
func (m *Message) Position() Position { return m.pos }

// chanStream is the client's place in one channel's stream; the reader
// goroutine updates it.
type chanStream struct {
	pos       Position // the last position delivered, or the start
	recoverTo uint64   // while > pos.Offset: history frames are due up to it
	corr      string   // the cid of the sub whose history frames are due
}

// stream returns ch's state, made if needed; the caller holds c.mu.
func (c *Client) stream(ch string) *chanStream {
	if c.streams == nil {
		c.streams = map[string]*chanStream{}
	}
	st := c.streams[ch]
	if st == nil {
		st = &chanStream{}
		c.streams[ch] = st
	}
	return st
}

// subBody returns the body of a sub of ch: {since} when the client has a
// position in its stream.
func (c *Client) subBody(ch string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[ch]
	if st == nil || st.pos.IsZero() {
		return nil
	}
	body, _ := json.Marshal(protocol.SubBody{Since: &st.pos})
	return body
}

// streamSubs returns the subscriptions of stream ch: a channel's, or
// for "" the inbox. The caller holds c.mu.
func (c *Client) streamSubs(ch string) []*Subscription {
	if ch == "" {
		if c.inbox == nil {
			return nil
		}
		return []*Subscription{c.inbox}
	}
	return c.subs[ch]
}

// inboxSince is the inbox position the hello asks to resume after: the
// client's own, else Options.InboxSince.
func (c *Client) inboxSince() *Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[""]; st != nil && !st.pos.IsZero() {
		p := st.pos
		return &p
	}
	if st := c.streams[""]; st == nil && c.opts.InboxSince != nil {
		p := *c.opts.InboxSince
		return &p
	}
	return nil
}

// onWelcomeInbox takes the inbox position from a welcome (the handshake
// calls it before the reader starts, so before the history frames that
// follow): as onSubReply does for a channel, under the stream key "".
func (c *Client) onWelcomeInbox(wb *protocol.WelcomeBody, cid string) {
	c.mu.Lock()
	if wb.Inbox == nil {
		delete(c.streams, "")
		c.mu.Unlock()
		if wb.InboxRecovered != nil && !*wb.InboxRecovered {
			c.gap(Gap{})
		}
		return
	}
	st := c.stream("")
	from := st.pos
	st.recoverTo, st.corr = 0, ""
	var g *Gap
	switch {
	case wb.InboxRecovered == nil:
		st.pos = *wb.Inbox
	case *wb.InboxRecovered:
		if from.IsZero() {
			st.pos = Position{Epoch: wb.Inbox.Epoch} // resuming Options.InboxSince
			if c.opts.InboxSince != nil {
				st.pos = *c.opts.InboxSince
			}
		}
		st.recoverTo, st.corr = wb.Inbox.Offset, cid
	default:
		st.pos = *wb.Inbox
		g = &Gap{From: from, To: *wb.Inbox}
		if from.IsZero() && c.opts.InboxSince != nil {
			g.From = *c.opts.InboxSince
		}
	}
	c.mu.Unlock()
	if g != nil {
		c.gap(*g)
	}
}

// gap reports g to ch's subscriptions' OnGap, or to OnError.
func (c *Client) gap(g Gap) {
	c.mu.Lock()
	subs := append([]*Subscription(nil), c.streamSubs(g.Channel)...)
	c.mu.Unlock()
	if g.Channel == "" && len(subs) == 0 {
		return // no Inbox is open: nobody is missing its direct messages
	}
	c.stats.gaps.Add(1)
	reported := false
	for _, s := range subs {
		if s.onGap != nil {
			s.onGap(g)
			reported = true
		}
	}
	if !reported {
		c.report(&GapError{Gap: g})
	}
}

// onSubReply takes the stream position from the reply to a sub (the
// reader calls it before the reply reaches the waiting request, and
// before the history frames that follow it).
func (c *Client) onSubReply(m *protocol.Message) {
	var rb protocol.SubReplyBody
	if protocol.DecodeBody(m.Body, &rb) != nil {
		return // the request reports it
	}
	c.mu.Lock()
	if rb.Stream == nil {
		delete(c.streams, m.Channel)
		c.mu.Unlock()
		if rb.Recovered != nil && !*rb.Recovered {
			c.gap(Gap{Channel: m.Channel})
		}
		return
	}
	st := c.stream(m.Channel)
	from := st.pos
	var g *Gap
	switch {
	case rb.Recovered == nil:
		st.pos = *rb.Stream
	case *rb.Recovered:
		st.recoverTo, st.corr = rb.Stream.Offset, m.Corr
	default:
		st.pos = *rb.Stream
		g = &Gap{Channel: m.Channel, From: from, To: *rb.Stream}
	}
	c.mu.Unlock()
	if g != nil {
		c.gap(*g)
	}
}

// onHistory delivers the stored frames of a history frame that follows a
// recovering sub's reply: each is verified as a stored deliver frame of
// the channel and end to end, and must carry the next offset of the
// channel's stream.
func (c *Client) onHistory(m *protocol.Message) {
	var hb protocol.HistoryBody
	if err := protocol.DecodeBody(m.Body, &hb); err != nil {
		c.reject(&protocol.Error{Code: protocol.CodeBadClaims, Message: "history frame body", Ref: m.ID})
		return
	}
	c.mu.Lock()
	st := c.streams[m.Channel]
	due := st != nil && st.corr == m.Corr && st.recoverTo > st.pos.Offset
	fv := c.fv
	c.mu.Unlock()
	if !due {
		c.reject(&protocol.Error{Code: protocol.CodeWrongSession, Message: "a history frame no sub asked for", Ref: m.ID})
		return
	}
	for _, f := range hb.Frames {
		var sd *protocol.StoredDelivery
		var err error
		if m.Channel == "" {
			sd, err = fv.VerifyStoredDirect([]byte(f), fv.Subject) // the inbox (spec.md §20.11)
		} else {
			sd, err = fv.VerifyStored([]byte(f), m.Channel)
		}
		if err != nil {
			c.reject(err)
			continue
		}
		c.deliverPositioned(sd.Message, sd.Position, true)
	}
}

// late delivers a deliver frame that failed only for freshness, if it
// carries the next position of its channel's stream (spec.md §20.4): a
// frame queued behind a long recovery is old when it arrives, and its
// position, not its age, shows that it is no replay. It reports whether
// the frame was taken.
func (c *Client) late(frame []byte) bool {
	c.mu.Lock()
	fv := c.fv
	c.mu.Unlock()
	sd, err := fv.VerifyLate(frame)
	if err != nil {
		return false
	}
	ch := sd.Message.Channel
	c.mu.Lock()
	st := c.streams[ch]
	next := st != nil && st.recoverTo <= st.pos.Offset && sd.Position.Epoch == st.pos.Epoch && sd.Position.Offset == st.pos.Offset+1
	c.mu.Unlock()
	if !next {
		return false
	}
	c.deliverPositioned(sd.Message, sd.Position, false)
	return true
}

// deliverPositioned delivers a deliver frame that carries a position,
// exactly once and in offset order: an offset the client already has is
// dropped; a jump (or another epoch) is reported as a Gap first. A
// stored frame must be the next one of a recovery.
func (c *Client) deliverPositioned(d *protocol.Message, pos Position, stored bool) {
	msg, err := c.open(d)
	if err != nil {
		c.reject(err)
		return
	}
	msg.pos = pos
	c.mu.Lock()
	if len(c.streamSubs(d.Channel)) == 0 {
		c.mu.Unlock()
		if d.Channel == "" {
			c.stats.unrouted.Add(1) // a direct message before Inbox
		}
		return // unsubscribed meanwhile
	}
	st := c.stream(d.Channel)
	var g *Gap
	switch {
	case stored && (pos.Epoch != st.pos.Epoch || pos.Offset != st.pos.Offset+1 || pos.Offset > st.recoverTo):
		c.mu.Unlock()
		c.reject(&protocol.Error{Code: protocol.CodeWrongSession, Message: fmt.Sprintf("stored frame at %v does not follow %v", pos, st.pos), Ref: d.ID})
		return
	case pos.Epoch == st.pos.Epoch && pos.Offset <= st.pos.Offset:
		c.mu.Unlock()
		c.stats.duplicates.Add(1)
		return
	case pos.Epoch != st.pos.Epoch || pos.Offset != st.pos.Offset+1:
		g = &Gap{Channel: d.Channel, From: st.pos, To: Position{Epoch: pos.Epoch, Offset: pos.Offset - 1}}
	}
	st.pos = pos
	targets := append([]*Subscription(nil), c.streamSubs(d.Channel)...)
	c.mu.Unlock()
	if g != nil {
		c.gap(*g)
	}
	if len(targets) > 0 {
		c.stats.delivered.Add(1)
	}
	for _, s := range targets {
		s.push(msg)
	}
}

// HistoryQuery selects a page of a channel's history (spec.md §20.5):
// with After, the oldest Limit messages after that offset; with Before,
// the newest Limit messages before it; with neither, the newest Limit.
// Limit 0 is the server's default page (100); at most 1000.
type HistoryQuery struct {
	Limit  int
	Before *uint64
	After  *uint64
}

// HistoryPage is a page of a channel's history: its messages in offset
// order, each verified end to end like a live one, the stream's epoch and
// last offset, and whether more messages lie in the direction read.
type HistoryPage struct {
	Messages []*Message
	Epoch    string
	Top      uint64
	More     bool
}

// History reads a page of channel's history. It needs the policy's
// history action on the channel (forbidden otherwise); a channel that
// keeps no history is not_found. Every message is the original signed
// delivery, verified as such: a frame that fails fails the call.
func (c *Client) History(ctx context.Context, channel string, q HistoryQuery) (*HistoryPage, error) {
	if !protocol.ValidChannel(channel) {
		return nil, fmt.Errorf("sigil client: invalid channel name %q", channel)
	}
	return c.history(ctx, channel, q)
}

// InboxHistory reads a page of the user's inbox (spec.md §20.11): the
// direct messages the server keeps for it, each verified end to end like
// a live one, with its position. An inbox that keeps no history is
// not_found. Use it to read what a gap of the Inbox left out.
func (c *Client) InboxHistory(ctx context.Context, q HistoryQuery) (*HistoryPage, error) {
	return c.history(ctx, "", q)
}

// history reads a page of channel's stream, or for "" the inbox's.
func (c *Client) history(ctx context.Context, channel string, q HistoryQuery) (*HistoryPage, error) {
	body, err := json.Marshal(protocol.HistoryRequest{Limit: q.Limit, Before: q.Before, After: q.After})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	fv := c.fv
	c.mu.Unlock()
	to := ""
	if channel == "" {
		to = fv.Subject
	}
	m, err := c.request(ctx, protocol.ActHistory, channel, to, body, true)
	if err != nil {
		return nil, err
	}
	var hr protocol.HistoryReplyBody
	if err := protocol.DecodeBody(m.Body, &hr); err != nil {
		return nil, fmt.Errorf("sigil client: history reply: %w", err)
	}
	page := &HistoryPage{Epoch: hr.Epoch, Top: hr.Top, More: hr.More}
	var prev uint64
	for _, f := range hr.Frames {
		var sd *protocol.StoredDelivery
		if channel == "" {
			sd, err = fv.VerifyStoredDirect([]byte(f), to)
		} else {
			sd, err = fv.VerifyStored([]byte(f), channel)
		}
		if err != nil {
			return nil, fmt.Errorf("sigil client: history: %w", err)
		}
		if sd.Position.Epoch != hr.Epoch || sd.Position.Offset <= prev || sd.Position.Offset > hr.Top {
			return nil, fmt.Errorf("sigil client: history: %w", &protocol.Error{Code: protocol.CodeWrongSession, Message: "stored frame out of place", Ref: sd.Message.ID})
		}
		prev = sd.Position.Offset
		msg, err := c.open(sd.Message)
		if err != nil {
			return nil, fmt.Errorf("sigil client: history: %w", err)
		}
		msg.pos = sd.Position
		page.Messages = append(page.Messages, msg)
	}
	return page, nil
}
