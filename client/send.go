package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/protocol"
)

// Publish sends body to every subscriber of channel, the client included
// if it is subscribed, and waits for the server to accept it. body is
// marshalled as JSON (a json.RawMessage is sent as it is). A refusal is
// an error carrying the protocol code (errors.As to *protocol.Error), for
// example forbidden. With Options.Encrypt the body is sealed with the
// channel's key, which the client holds once it has subscribed.
//
// Publish waits while the client reconnects, until ctx is done.
func (c *Client) Publish(ctx context.Context, channel string, body any) error {
	if !protocol.ValidChannel(channel) {
		return fmt.Errorf("sigil client: invalid channel name %q", channel)
	}
	plain, err := marshalBody(body, true)
	if err != nil {
		return err
	}
	_, err = c.request(ctx, protocol.ActPub, channel, "", plain, true)
	return err
}

// Send sends a direct message to every session of user and waits for the
// server to accept it. Recipients read it from Inbox. A user without a live
// session is not_found.
func (c *Client) Send(ctx context.Context, user string, body any) error {
	if user == "" || len(user) > 256 {
		return errors.New("sigil client: invalid user name")
	}
	plain, err := marshalBody(body, true)
	if err != nil {
		return err
	}
	_, err = c.request(ctx, protocol.ActDM, "", user, plain, true)
	return err
}

// Call sends req to the server application's handler for action (a name
// with a dot, "orders.create") and decodes the reply body into resp, which
// may be nil. A correlation id pairs the reply with the call; ctx's
// deadline bounds the wait. An error frame in answer is returned as an
// error carrying its protocol code (app_error, unknown_action, forbidden...).
func (c *Client) Call(ctx context.Context, action string, req, resp any) error {
	if !protocol.IsAppAction(action) {
		return fmt.Errorf("sigil client: %q is not an application action (it needs a dot)", action)
	}
	plain, err := marshalBody(req, false)
	if err != nil {
		return err
	}
	m, err := c.request(ctx, action, "", "", plain, true)
	if err != nil {
		return err
	}
	if resp == nil || len(m.Body) == 0 {
		return nil
	}
	if err := json.Unmarshal(m.Body, resp); err != nil {
		return fmt.Errorf("sigil client: decoding the reply to %s: %w", action, err)
	}
	return nil
}

// Presence returns the subjects subscribed to channel.
func (c *Client) Presence(ctx context.Context, channel string) ([]string, error) {
	if !protocol.ValidChannel(channel) {
		return nil, fmt.Errorf("sigil client: invalid channel name %q", channel)
	}
	m, err := c.request(ctx, protocol.ActPresence, channel, "", nil, true)
	if err != nil {
		return nil, err
	}
	var pb protocol.PresenceBody
	if err := protocol.DecodeBody(m.Body, &pb); err != nil {
		return nil, fmt.Errorf("sigil client: presence reply: %w", err)
	}
	return pb.Members, nil
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.request(ctx, protocol.ActPing, "", "", nil, true)
	return err
}

func marshalBody(body any, required bool) ([]byte, error) {
	if body == nil {
		if required {
			return nil, errors.New("sigil client: a body is required")
		}
		return nil, nil
	}
	switch b := body.(type) {
	case json.RawMessage:
		if !json.Valid(b) {
			return nil, errors.New("sigil client: body is not valid JSON")
		}
		return b, nil
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("sigil client: marshalling the body: %w", err)
	}
	return data, nil
}

// errNotSent marks a request that failed before its frame was handed to
// the connection: the server cannot have seen it.
var errNotSent = errors.New("not sent")

// waitReady returns the live connection and the session's signer, waiting
// while the client reconnects.
func (c *Client) waitReady(ctx context.Context) (*conn, *protocol.ClientSigner, error) {
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, nil, err
		}
		cn, ready, signer := c.cur, c.ready, c.signer
		c.mu.Unlock()
		select {
		case <-ready:
			if cn == nil {
				continue
			}
			select {
			case <-cn.closed: // lost: wait until its reader took it out of service
				select {
				case <-cn.done:
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
				continue
			default:
				return cn, signer, nil
			}
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-c.done:
			return nil, nil, c.Err()
		}
	}
}

// request sends one frame on the live connection and, if want, waits for
// its answer.
func (c *Client) request(ctx context.Context, act, ch, to string, plain []byte, want bool) (*protocol.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	resigned := 0
	for {
		cn, signer, err := c.waitReady(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", errNotSent, err)
			}
			return nil, err
		}
		m, err := c.requestOn(ctx, cn, signer, act, ch, to, plain, want)
		if errors.Is(err, errNotSent) && ctx.Err() == nil && c.Err() == nil {
			// The connection was lost before the frame was handed to it:
			// the server never saw it, so it goes on the next one.
			continue
		}
		if errors.Is(err, ErrNotAccepted) && resigned < maxResign && ctx.Err() == nil && c.Err() == nil {
			// The frame was lost with its connection and certainly never
			// accepted (resend.go): sending the message again, as a new
			// frame, cannot deliver it twice.
			resigned++
			continue
		}
		return m, err
	}
}

// requestOn is request on a given connection (resubscription uses it before
// the connection is open to other requests).
func (c *Client) requestOn(ctx context.Context, cn *conn, signer *protocol.ClientSigner, act, ch, to string, plain []byte, want bool) (*protocol.Message, error) {
	env := &protocol.Envelope{Action: act, Channel: ch, To: to}
	if plain != nil {
		if c.opts.Encrypt && act != protocol.ActSub && act != protocol.ActHistory {
			c.mu.Lock()
			key := c.sessKey
			if act == protocol.ActPub {
				key = c.chKeys[ch]
			}
			c.mu.Unlock()
			if key == nil {
				if act == protocol.ActPub {
					return nil, ErrNoChannelKey
				}
				return nil, ErrNotEncrypted
			}
			enc, err := protocol.SealBody(key, plain)
			if err != nil {
				return nil, err
			}
			env.Enc = enc
		} else {
			env.Body = plain
		}
	}
	var ans chan answer
	if want {
		env.Corr = uuid.NewString()
		ans = make(chan answer, 1)
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		c.pending[env.Corr] = ans
		if act == protocol.ActSub {
			if c.subCids == nil {
				c.subCids = map[string]string{}
			}
			c.subCids[env.Corr] = ch
		}
		c.mu.Unlock()
	}
	forget := func() {
		if want {
			c.mu.Lock()
			delete(c.pending, env.Corr)
			delete(c.subCids, env.Corr)
			c.mu.Unlock()
		}
	}
	frame, err := c.writeFrame(ctx, cn, signer, env)
	if err == nil && act == protocol.ActRefresh {
		c.mu.Lock()
		c.refreshSeq = env.Seq
		c.mu.Unlock()
	}
	if err != nil {
		forget()
		select {
		case <-c.done:
			return nil, c.Err()
		default:
		}
		return nil, fmt.Errorf("%w: %w: %w", errNotSent, ErrConnectionLost, err)
	}
	if !want {
		return nil, nil
	}
	if act == protocol.ActPub || act == protocol.ActDM {
		return c.awaitResendable(ctx, cn, env, frame, ans, forget)
	}
	select {
	case a := <-ans:
		if a.err != nil {
			var pe *protocol.Error
			if errors.As(a.err, &pe) {
				return nil, fmt.Errorf("sigil client: %s refused: %w", act, a.err)
			}
			return nil, a.err
		}
		return a.m, nil
	case <-cn.done:
		forget()
		// The answer may have been dispatched just before the reader ended.
		select {
		case a := <-ans:
			if a.err == nil {
				return a.m, nil
			}
		default:
		}
		return nil, ErrConnectionLost
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// Subscribe subscribes to channel and returns a subscription that yields
// the channel's verified messages, starting with those published after the
// server accepted the subscription (or, with Since, after a saved
// position). The client resubscribes after every reconnect; on a channel
// with history (spec.md §20) it then recovers what it missed, so that the
// subscription yields every message once, in the stream's order, or
// reports a Gap. Several subscriptions to one channel each receive every
// message.
func (c *Client) Subscribe(ctx context.Context, channel string, opts ...SubscribeOption) (*Subscription, error) {
	if !protocol.ValidChannel(channel) {
		return nil, fmt.Errorf("sigil client: invalid channel name %q", channel)
	}
	var o subscribeOptions
	for _, f := range opts {
		f(&o)
	}
	s := newSubscription(c, channel, c.opts.SubscriptionBuffer)
	s.onGap = o.onGap
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	if o.since != nil {
		if len(c.subs[channel]) > 0 {
			c.mu.Unlock()
			return nil, errors.New("sigil client: Since applies to the first subscription to a channel")
		}
		c.stream(channel).pos = *o.since
	}
	c.subs[channel] = append(c.subs[channel], s)
	c.mu.Unlock()
	m, err := c.request(ctx, protocol.ActSub, channel, "", c.subBody(channel), true)
	if err != nil {
		c.removeSub(s)
		s.end(err)
		return nil, err
	}
	if err := c.subReply(channel, m); err != nil {
		c.removeSub(s)
		s.end(err)
		return nil, err
	}
	return s, nil
}

// subReply takes the channel key from a sub reply.
func (c *Client) subReply(channel string, m *protocol.Message) error {
	var rb protocol.SubReplyBody
	if err := protocol.DecodeBody(m.Body, &rb); err != nil {
		return fmt.Errorf("sigil client: sub reply: %w", err)
	}
	if rb.Key == "" {
		return nil
	}
	return c.addChannelKey(channel, rb.Key)
}

func (c *Client) addChannelKey(channel, wrapped string) error {
	c.mu.Lock()
	ekey := c.ekey
	c.mu.Unlock()
	if ekey == nil {
		return errors.New("sigil client: a content key arrived without encryption")
	}
	k, err := protocol.UnwrapContentKey(wrapped, ekey)
	if err != nil {
		return fmt.Errorf("sigil client: channel key: %w", err)
	}
	if k.Scope != protocol.ChannelScope(channel) {
		return fmt.Errorf("sigil client: channel key for scope %q on %s", k.Scope, channel)
	}
	c.ring.Add(k, time.Time{})
	c.mu.Lock()
	c.chKeys[channel] = k
	c.mu.Unlock()
	return nil
}

// removeSub forgets s; it reports whether s was the channel's last.
func (c *Client) removeSub(s *Subscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := slices.DeleteFunc(slices.Clone(c.subs[s.channel]), func(x *Subscription) bool { return x == s })
	if len(l) == 0 {
		delete(c.subs, s.channel)
		delete(c.streams, s.channel)
		return true
	}
	c.subs[s.channel] = l
	return false
}

// resubscribe restores the subscriptions on a new connection. A channel the
// server now refuses ends its subscriptions with the refusal.
func (c *Client) resubscribe(ctx context.Context, cn *conn) error {
	c.mu.Lock()
	signer := c.signer
	chans := slices.Collect(maps.Keys(c.subs))
	c.mu.Unlock()
	for _, ch := range chans {
		m, err := c.requestOn(ctx, cn, signer, protocol.ActSub, ch, "", c.subBody(ch), true)
		if err == nil {
			err = c.subReply(ch, m)
		}
		if err == nil {
			continue
		}
		if protocol.CodeOf(err) == "" && !errors.Is(err, ErrNotEncrypted) {
			return err // the connection failed: try again
		}
		c.report(fmt.Errorf("sigil client: resubscribing to %s: %w", ch, err))
		c.mu.Lock()
		subs := c.subs[ch]
		delete(c.subs, ch)
		c.mu.Unlock()
		for _, s := range subs {
			s.end(err)
		}
	}
	return nil
}
