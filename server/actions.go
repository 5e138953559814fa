package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// handle verifies a frame of an established session and runs its action.
func (c *conn) handle(frame []byte) {
	s := c.srv
	ks := s.keys()
	t0 := time.Now()
	m, err := ks.verifier.Verify(s.ctx, frame, c.sess)
	s.m.verifySeconds.Observe(time.Since(t0).Seconds())
	if err != nil {
		c.auditWait() // answers keep the order of the frames
		if protocol.IsCode(err, protocol.CodeReplayID) && c.resent(frame) {
			return // a copy of an accepted pub or dm, answered as it was
		}
		c.reject(frame, err)
		return
	}
	s.m.accepted.Inc()
	s.accepted.Add(1)
	ctx := s.ctx
	var end func(*protocol.Error)
	if m.Action == protocol.ActPub || m.Action == protocol.ActDM {
		// Its answer is kept for a copy sent again (resend.go).
		ctx, end = s.cfg.Outcomes.Begin(ctx, c.sid, &m.Envelope, m.Time().Add(s.cfg.Skew))
	}
	if c.auditPiped(ctx, m, end) {
		return // answered once its audit log entry is durable
	}
	c.auditWait()
	var perr *protocol.Error
	if c.logIndex, perr = c.auditFrame(m); perr == nil {
		perr = c.dispatch(ctx, m)
	}
	c.answered(m, end, perr)
}

// answered ends the handling of m: its outcome (end, if any) and its
// error frame, if it failed.
func (c *conn) answered(m *protocol.Message, end func(*protocol.Error), perr *protocol.Error) {
	if perr != nil && perr.Ref == "" {
		perr.Ref = m.ID
	}
	if end != nil {
		end(perr)
	}
	if perr != nil {
		c.srv.m.reject(perr.Code)
		c.sendError(&m.Envelope, perr)
	}
}

// codedError is the error frame for err: its own code if it is a
// *protocol.Error (unavailable from the broker, say), else internal.
func codedError(err error, msg string) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return &protocol.Error{Code: pe.Code, Message: pe.Message}
	}
	return &protocol.Error{Code: protocol.CodeInternal, Message: msg}
}

func badRequest(msg string) *protocol.Error {
	return &protocol.Error{Code: protocol.CodeBadRequest, Message: msg}
}

// reply answers m with act "reply" when it has a cid, or always when force.
func (c *conn) reply(m *protocol.Message, body any, force bool) {
	if m.Corr == "" && !force {
		return
	}
	if body == nil && c.logIndex >= 0 {
		body = LoggedReply{LogIndex: uint64(c.logIndex)}
	}
	if body == nil {
		body = struct{}{}
	}
	c.sendSigned(&protocol.Envelope{Action: protocol.ActReply, Corr: m.Corr, Channel: m.Channel}, body)
}

// dispatch runs m's action; a pub or dm publishes with ctx.
func (c *conn) dispatch(ctx context.Context, m *protocol.Message) *protocol.Error {
	// The fields of a built-in action's frame (spec.md §9.1), checked
	// after acceptance, so a misfit is no violation.
	if err := protocol.CheckAction(&m.Envelope); err != nil {
		return err.(*protocol.Error)
	}
	s := c.srv
	switch m.Action {
	case protocol.ActPing:
		c.sendSigned(&protocol.Envelope{Action: protocol.ActPong, Corr: m.Corr}, nil)
	case protocol.ActSub:
		since, _ := protocol.ParseSubBody(m.Body) // CheckAction checked it
		members, key, err := s.hub.subscribe(c, m.Channel)
		if err != nil {
			return codedError(err, "subscribe failed")
		}
		rb := protocol.SubReplyBody{Members: members, Key: key}
		if !c.isHeld(m.Channel) {
			// Already subscribed: the live frames continue, since is moot.
			c.releaseChannel(m.Channel, c.sign(&protocol.Envelope{Action: protocol.ActReply, Corr: m.Corr, Channel: m.Channel}, rb))
			return nil
		}
		// The reply (with the stream's position and what was recovered),
		// the history frames, then the channel's frames held since c was
		// added (spec.md §20.3).
		batches, top, positioned, perr := c.recoverSub(m, since, &rb)
		if perr != nil {
			c.dropHold(m.Channel)
			s.hub.unsubscribe(c, m.Channel)
			return perr
		}
		reply := c.sign(&protocol.Envelope{Action: protocol.ActReply, Corr: m.Corr, Channel: m.Channel}, rb)
		if positioned {
			c.releaseRecovered(m.Channel, reply, batches, top)
		} else {
			c.releaseChannel(m.Channel, reply)
		}
		s.hub.updateSession(c)
	case protocol.ActHistory:
		return c.readHistory(m)
	case protocol.ActUnsub:
		if s.hub.unsubscribe(c, m.Channel) {
			s.hub.updateSession(c)
		}
		c.reply(m, nil, false)
	case protocol.ActPresence:
		members, perr := s.hub.members(s.ctx, m.Channel)
		if perr != nil {
			return perr
		}
		c.reply(m, protocol.PresenceBody{Members: members}, true)
	case protocol.ActPub:
		err := s.hub.publish(ctx, m.Channel, m.Frame, c.senderJWK(), c.sub, c.logIndex)
		if err != nil {
			return codedError(err, "publish failed")
		}
		c.reply(m, nil, false)
	case protocol.ActDM:
		// m.Frame is in the connection's read buffer, reused after this
		// frame: the publication gets its own copy (a broker may keep it).
		d := &DirectMessage{To: m.To, Sender: c.sub, SenderJWK: c.senderJWK(), Frame: bytes.Clone(m.Frame), LogIndex: bodyLogIndex(c.logIndex)}
		if m.Encrypted {
			d.Plain = m.Body
		}
		if perr := s.hub.direct(ctx, d); perr != nil {
			return perr
		}
		c.reply(m, nil, false)
	case protocol.ActRefresh:
		return c.refresh(m)
	default:
		if !protocol.IsAppAction(m.Action) {
			return &protocol.Error{Code: protocol.CodeUnknownAction, Message: "unknown action"}
		}
		h := s.handler(m.Action)
		if h == nil {
			return &protocol.Error{Code: protocol.CodeUnknownAction, Message: "no handler for this action"}
		}
		c.mu.Lock()
		info := SessionInfo{ID: c.sid, Subject: c.sub, Roles: append([]string{}, c.roles...), TokenID: c.jti}
		c.mu.Unlock()
		res, err := h(s.ctx, &Message{Message: m, Session: info})
		if err != nil {
			if pe, ok := err.(*protocol.Error); ok {
				return &protocol.Error{Code: pe.Code, Message: pe.Message}
			}
			return &protocol.Error{Code: protocol.CodeAppError, Message: err.Error()}
		}
		body, err := json.Marshal(res)
		if err != nil {
			return &protocol.Error{Code: protocol.CodeInternal, Message: "handler result is not JSON"}
		}
		c.reply(m, json.RawMessage(body), true)
	}
	return nil
}

// refresh is the in-band refresh: rotate the refresh token and move the
// session to a new token with the same sid and key.
func (c *conn) refresh(m *protocol.Message) *protocol.Error {
	var rb protocol.RefreshBody
	if err := protocol.DecodeBody(m.Body, &rb); err != nil || rb.RefreshToken == "" {
		return badRequest("refresh body must be {refresh_token}")
	}
	s := c.srv
	// A store that fails anywhere on this path fails the session closed:
	// an unavailable error frame, then 4006 (the client reconnects with
	// backoff, and its hello is checked again).
	failClosed := func() *protocol.Error {
		pe := &protocol.Error{Code: protocol.CodeUnavailable, Message: "a store is unavailable", Ref: m.ID}
		s.m.reject(pe.Code)
		c.abort(&m.Envelope, pe, protocol.CloseServerError, "store unavailable")
		return nil
	}
	res, aerr := s.rotateRefresh(s.ctx, rb.RefreshToken, c.sid, c.sess.Key().Thumbprint(), c)
	if aerr != nil {
		if aerr.status >= 500 {
			return failClosed() // rotateRefresh logged and counted the failure
		}
		pe := &protocol.Error{Code: protocol.CodeBadToken, Message: "refresh token rejected", Ref: m.ID}
		revoked, err := s.cfg.Revocations.IsRevoked(s.ctx, c.sess.TokenID(), c.sub, c.sess.IssuedAt())
		if err != nil {
			// Whether a reuse just revoked this session cannot be told.
			s.storeError("refresh revocation check", err)
			return failClosed()
		}
		if revoked {
			// Reuse revoked the family, this session's token included.
			s.m.reject(pe.Code)
			c.sendError(&m.Envelope, pe)
			c.close(protocol.CloseRevoked, "revoked", true)
			return nil
		}
		return pe
	}
	if err := s.keys().verifier.Refresh(s.ctx, c.sess, res.Token); err != nil {
		if pe := asProtoErr(err); pe.Code == protocol.CodeUnavailable || pe.Code == protocol.CodeInternal {
			s.storeError("refresh token check", err)
			return failClosed()
		}
		return asProtoErr(err)
	}
	c.mu.Lock()
	c.roles, c.jti, c.iat = c.sess.Roles(), c.sess.TokenID(), c.sess.IssuedAt().Unix()
	c.mu.Unlock()
	c.auditToken(res.Token)
	c.exp.Store(c.sess.Expiry().UnixMilli())
	s.hub.updateSession(c)
	c.warned.Store(false)
	s.sched.planExpiry(c, s.cfg.Now(), s.cfg.ExpiryWarning)
	c.sendSigned(&protocol.Envelope{Action: protocol.ActRefreshed, Corr: m.Corr},
		protocol.RefreshedBody{Token: res.Token, Expiry: res.ExpiresAt, RefreshToken: res.RefreshToken})
	return nil
}
