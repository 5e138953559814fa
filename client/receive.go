package client

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// read is the connection's only reader: it verifies every server frame and
// dispatches it. It ends when the connection does.
func (c *Client) read(cn *conn) {
	defer c.wg.Done()
	defer close(cn.done)
	defer c.dropConn(cn)
	for {
		mt, data, err := cn.ws.ReadMessage()
		if err != nil {
			cn.code, cn.err = protocol.CloseAbnormal, err
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				cn.code, cn.reason = protocol.CloseCode(ce.Code), ce.Text
			}
			cn.close()
			return
		}
		if mt != websocket.TextMessage {
			c.reject(&protocol.Error{Code: protocol.CodeMalformed, Message: "binary frame from the server"})
			continue
		}
		if !utf8.Valid(data) {
			// RFC 6455 §8.1: fail the connection; it is lost (1006), and
			// the client reconnects with backoff (spec.md §10.2).
			c.reject(&protocol.Error{Code: protocol.CodeMalformed, Message: "text frame from the server is not valid UTF-8"})
			_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseInvalidUTF8), "invalid UTF-8"), time.Now().Add(time.Second))
			cn.code, cn.err = protocol.CloseAbnormal, errors.New("sigil client: the server sent a text frame that is not UTF-8")
			cn.close()
			return
		}
		m, err := cn.fv.Verify(data)
		if protocol.IsCode(err, protocol.CodeUnknownKey) {
			if ks := c.refetchKeys(c.ctx, true); ks != nil {
				cn.fv.Keys = ks // the reader is the only user of cn.fv
				m, err = cn.fv.Verify(data)
			}
		}
		if protocol.IsCode(err, protocol.CodeStale) && c.late(data) {
			continue
		}
		if protocol.IsCode(err, protocol.CodeStale) && c.late(data) {
			continue
		}
		if err != nil {
			c.reject(err)
			continue
		}
		c.dispatch(m)
	}
}

// reject counts and reports a server frame that failed verification. The
// frame is dropped and nothing else changes.
func (c *Client) reject(err error) {
	c.stats.rejected.Add(1)
	c.report(fmt.Errorf("sigil client: server frame rejected: %w", err))
}

// refetchKeys fetches the server's JWKS again after a frame named a key
// the client does not know: the server may have rotated its keys (spec.md
// §13.3). It returns the new key set, or nil when the keys are pinned
// (Options.JWKS), the fetch failed (reported), or, with limit, the last
// fetch was less than a minute ago. The limit holds after the welcome, so
// that frames naming unknown keys cannot make the client fetch in a loop;
// before it, each connection attempt may fetch once (attempts are spaced
// by the reconnect backoff). The caller installs the keys in the
// verifier it owns.
func (c *Client) refetchKeys(ctx context.Context, limit bool) *protocol.KeySet {
	if c.opts.JWKS != nil {
		return nil
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	if limit && time.Since(c.keysFetched) < time.Minute {
		return nil
	}
	c.keysFetched = time.Now()
	ks, err := fetchKeys(ctx, c.opts.HTTPClient, c.base)
	if err != nil {
		c.report(err)
		return nil
	}
	return ks
}

// dispatch acts on a verified server frame.
func (c *Client) dispatch(m *protocol.Message) {
	switch m.Action {
	case protocol.ActReply, protocol.ActPong, protocol.ActRefreshed, protocol.ActError:
		if m.Corr != "" {
			c.mu.Lock()
			_, isSub := c.subCids[m.Corr]
			delete(c.subCids, m.Corr)
			c.mu.Unlock()
			if isSub && m.Action == protocol.ActReply {
				c.onSubReply(m)
			}
		}
		var a answer
		if m.Action == protocol.ActError {
			a.err = errorFrame(m)
		} else {
			a.m = m
		}
		if m.Corr != "" {
			c.mu.Lock()
			ch, ok := c.pending[m.Corr]
			delete(c.pending, m.Corr)
			c.mu.Unlock()
			if ok {
				ch <- a
				return
			}
		}
		if a.err != nil {
			c.report(fmt.Errorf("sigil client: error from the server: %w", a.err))
		}
	case protocol.ActDeliver, protocol.ActDirect:
		c.deliver(m)
	case protocol.ActHistory:
		c.onHistory(m)
	case protocol.ActExpiring:
		var xb protocol.ExpiringBody
		if err := protocol.DecodeBody(m.Body, &xb); err != nil {
			c.reject(&protocol.Error{Code: protocol.CodeBadClaims, Message: "expiring frame body", Ref: m.ID})
			return
		}
		c.mu.Lock()
		stale := c.tok != nil && xb.Expiry/1000 < c.tok.Expiry.Unix() // exp has second precision
		c.mu.Unlock()
		if stale {
			return // about a token already replaced: it crossed our refresh
		}
		c.wg.Add(1)
		go func() { defer c.wg.Done(); c.refresh() }()
	case protocol.ActKey:
		var kb protocol.KeyBody
		if err := protocol.DecodeBody(m.Body, &kb); err != nil {
			c.reject(&protocol.Error{Code: protocol.CodeBadClaims, Message: "key frame body", Ref: m.ID})
			return
		}
		if m.Channel == "" {
			c.mu.Lock()
			ekey := c.ekey
			c.mu.Unlock()
			if ekey == nil {
				return
			}
			k, err := protocol.UnwrapContentKey(kb.Key, ekey)
			if err != nil || k.Scope != protocol.ScopeSession {
				c.report(fmt.Errorf("sigil client: session key frame: %v", err))
				return
			}
			c.ring.Add(k, time.Time{})
			c.mu.Lock()
			c.sessKey = k
			c.mu.Unlock()
			return
		}
		if err := c.addChannelKey(m.Channel, kb.Key); err != nil {
			c.report(err)
		}
	case protocol.ActJoin, protocol.ActLeave:
		var pb protocol.JoinBody
		if err := protocol.DecodeBody(m.Body, &pb); err != nil || pb.Sub == "" || m.Channel == "" {
			c.reject(&protocol.Error{Code: protocol.CodeBadClaims, Message: m.Action + " frame body", Ref: m.ID})
			return
		}
		if c.opts.OnPresence != nil {
			c.cbMu.Lock()
			c.opts.OnPresence(PresenceEvent{Channel: m.Channel, Subject: pb.Sub, Joined: m.Action == protocol.ActJoin, Time: m.Time()})
			c.cbMu.Unlock()
		}
	default:
		c.report(fmt.Errorf("sigil client: unexpected server frame %q", m.Action))
	}
}

// deliver verifies a delivery end to end and hands it to the channel's
// subscriptions (deliver) or the inbox (direct), once.
func (c *Client) deliver(d *protocol.Message) {
	if pos, ok, err := protocol.DeliveryPosition(d); err != nil || ok {
		if err != nil {
			c.reject(err)
			return
		}
		c.deliverPositioned(d, pos, false)
		return
	}
	msg, err := c.open(d)
	if err != nil {
		c.reject(err)
		return
	}
	// A message is delivered at most once, even if the server sends it
	// again in another delivery (for example across a reconnect).
	key := msg.SenderKey.Thumbprint() + "/" + msg.ID
	now := c.now()
	c.mu.Lock()
	if until, dup := c.seen[key]; dup && now.Before(until) {
		c.mu.Unlock()
		c.stats.duplicates.Add(1)
		return
	}
	c.seen[key] = msg.Time.Add(10 * time.Minute)
	if c.seenOps++; c.seenOps%1024 == 0 {
		for k, until := range c.seen {
			if now.After(until) {
				delete(c.seen, k)
			}
		}
	}
	var targets []*Subscription
	if d.Action == protocol.ActDirect {
		if c.inbox != nil {
			targets = []*Subscription{c.inbox}
		}
	} else {
		targets = append(targets, c.subs[d.Channel]...)
	}
	c.mu.Unlock()
	if len(targets) > 0 {
		c.stats.delivered.Add(1)
	} else {
		c.stats.unrouted.Add(1)
	}
	for _, s := range targets {
		s.push(msg)
	}
}

// open verifies a delivery end to end with protocol's
// FrameVerifier.OpenDelivery: the sender's own frame, or for a message the
// server application published, the inner server frame against the JWKS.
func (c *Client) open(d *protocol.Message) (*Message, error) {
	var keys protocol.ContentKeys
	if c.opts.Encrypt {
		keys = c.ring
	}
	c.mu.Lock()
	fv := c.fv
	c.mu.Unlock()
	sender, inner, err := fv.OpenDelivery(d, keys)
	if err != nil {
		return nil, err
	}
	m := &Message{
		Channel: d.Channel, To: d.To, From: sender.Subject, FromServer: sender.Server, ID: inner.ID, Time: inner.Time(),
		Encrypted: inner.Encrypted || inner.Enc != "", SenderKey: sender.Key, Frame: inner.Frame, Delivery: d.Frame,
		logIndex: deliveryLogIndex(d),
	}
	if inner.Enc == "" || inner.Encrypted {
		m.Body = inner.Body
	}
	return m, nil
}
