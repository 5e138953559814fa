package client

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// Message is a verified message: a channel publish or a direct message,
// checked end to end (spec.md §10.3) — the server's signature over the
// delivery, and the sender's own signature over what it said.
type Message struct {
	Channel string    // the channel (publishes); empty for direct messages
	To      string    // the recipient (direct messages); empty for publishes
	From    string    // the sender's verified subject; "server" for the server application
	ID      string    // the sender's message id
	Time    time.Time // the sender's timestamp
	// Body is the plaintext JSON body. It is nil when the body was
	// encrypted and this client has no key for it (Options.Encrypt off).
	Body json.RawMessage
	// Encrypted reports that the body travelled sealed (spec.md §11).
	Encrypted bool
	// FromServer reports that the server application published the
	// message itself: it is signed by a key of the server's JWKS.
	FromServer bool
	// SenderKey is the sender's session public key (the JWKS key for
	// FromServer).
	SenderKey *protocol.PublicKey
	// Frame is the sender's signed frame, byte for byte: evidence of who
	// said what (spec.md §14).
	Frame []byte
	// Delivery is the server's signed deliver or direct frame, byte for
	// byte. With the server's JWKS it is evidence on its own, verifiable
	// offline by protocol.VerifyDeliveryEvidence (or `sigil verify`): the
	// server vouches that SenderKey is From's, and the sender signed Frame.
	Delivery []byte

	pos      Position // in the channel's stream (Position)
	logIndex *uint64  // in the server's audit log (LogIndex)
}

// Decode unmarshals the body into v.
func (m *Message) Decode(v any) error { return json.Unmarshal(m.Body, v) }

// Subscription yields the verified messages of one channel (or, for
// Inbox, the direct messages of the client's user). Read them from C or
// with Next. It is safe for concurrent use.
type Subscription struct {
	c       *Client
	channel string
	max     int
	onGap   func(Gap)

	mu     sync.Mutex
	q      []*Message
	ended  bool  // no more messages will be queued
	err    error // why it ended
	notify chan struct{}

	out       chan *Message
	done      chan struct{} // closed by Close: stop at once
	closeOnce sync.Once
}

func newSubscription(c *Client, channel string, max int) *Subscription {
	s := &Subscription{c: c, channel: channel, max: max,
		notify: make(chan struct{}, 1), out: make(chan *Message), done: make(chan struct{})}
	go s.pump()
	return s
}

// Channel returns the subscribed channel ("" for Inbox).
func (s *Subscription) Channel() string { return s.channel }

// C returns the channel of messages. It is closed when the subscription
// ends: after Close, after the client closes (once queued messages are
// read), or on ErrSlowConsumer. Err then says why.
func (s *Subscription) C() <-chan *Message { return s.out }

// Next returns the next message, waiting until one arrives, ctx is done or
// the subscription ends (then the error is Err's).
func (s *Subscription) Next(ctx context.Context) (*Message, error) {
	select {
	case m, ok := <-s.out:
		if !ok {
			return nil, s.Err()
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Err returns why the subscription ended, or nil while it is active.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription; queued messages are dropped. If it was the
// client's last subscription to the channel, the client unsubscribes.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.end(ErrClosed)
		close(s.done)
		if s.channel == "" {
			s.c.mu.Lock()
			if s.c.inbox == s {
				s.c.inbox = nil
			}
			s.c.mu.Unlock()
			return
		}
		if s.c.removeSub(s) {
			s.c.mu.Lock()
			cn, signer := s.c.cur, s.c.signer
			s.c.mu.Unlock()
			if cn != nil {
				ctx, cancel := context.WithTimeout(s.c.ctx, s.c.opts.WriteTimeout)
				_, _ = s.c.requestOn(ctx, cn, signer, protocol.ActUnsub, s.channel, "", nil, false)
				cancel()
			}
		}
	})
	return nil
}

// push queues m; it ends the subscription if the reader is too far behind.
func (s *Subscription) push(m *Message) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	if len(s.q) >= s.max {
		s.mu.Unlock()
		s.end(ErrSlowConsumer)
		s.c.report(ErrSlowConsumer)
		return
	}
	s.q = append(s.q, m)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// end stops queueing; the pump closes C once the queue is drained.
func (s *Subscription) end(err error) {
	s.mu.Lock()
	if !s.ended {
		s.ended, s.err = true, err
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Subscription) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		if len(s.q) > 0 {
			m := s.q[0]
			s.q[0] = nil
			s.q = s.q[1:]
			s.mu.Unlock()
			select {
			case s.out <- m:
			case <-s.done:
				return
			}
			continue
		}
		ended := s.ended
		s.mu.Unlock()
		if ended {
			return
		}
		select {
		case <-s.notify:
		case <-s.done:
			return
		}
	}
}

// Inbox returns the subscription that receives direct messages sent to the
// client's user (Send). Direct messages that arrive while no inbox is open
// are dropped (and counted in Stats.Unrouted): open the inbox before anyone
// can send to the user, for example right after Dial.
//
// On a server that keeps direct messages (spec.md §20.11), the inbox is a
// stream like a channel's: each message has a Position, the client resumes
// after the last one it received on every reconnect, and a gap is
// reported as a Subscription's is (to the OnGap option of the call that
// opened the inbox, else to Options.OnError as a *GapError with an empty
// Channel). Options.InboxSince resumes a position saved by an earlier
// process. The options apply to the call that opens the inbox; Since is
// ignored (use Options.InboxSince).
func (c *Client) Inbox(opts ...SubscribeOption) *Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inbox == nil {
		var o subscribeOptions
		for _, f := range opts {
			f(&o)
		}
		c.inbox = newSubscription(c, "", c.opts.SubscriptionBuffer)
		c.inbox.onGap = o.onGap
		if c.err != nil {
			c.inbox.end(c.err)
		}
	}
	return c.inbox
}
