package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// ErrNotAccepted is returned by Publish and Send when the server certainly
// never accepted the message: the connection dropped before the answer,
// and the copy the client sent again after reconnecting was refused as
// replay_seq, which a frame the server had accepted never is (spec.md
// §20.10). Publish and Send then send the message again by themselves, as
// a new frame, up to maxResign times (each after another lost
// connection), and return ErrNotAccepted only beyond that. Nothing was
// delivered; sending the message again is safe.
var ErrNotAccepted = errors.New("sigil client: the server did not accept the message")

// maxResign bounds how many times one Publish or Send signs its message
// again after the server certainly did not accept it.
const maxResign = 3

// unacked is a pub or dm frame sent and not yet answered.
type unacked struct {
	seq     uint64
	frame   []byte
	ts      time.Time
	expired chan struct{} // closed when it is too old to be sent again, or its session was given up
	// notAccepted, set before expired is closed, says the server certainly
	// never handled the frame (Client.renewToken): it is signed again.
	notAccepted bool
}

// track records frame (signed as env) as unanswered; the returned func
// forgets it.
func (c *Client) track(env *protocol.Envelope, frame []byte) (*unacked, func()) {
	u := &unacked{seq: env.Seq, frame: frame, ts: env.Time(), expired: make(chan struct{})}
	c.mu.Lock()
	if c.unacked == nil {
		c.unacked = map[string]*unacked{}
	}
	c.unacked[env.Corr] = u
	c.mu.Unlock()
	return u, func() {
		c.mu.Lock()
		delete(c.unacked, env.Corr)
		c.mu.Unlock()
	}
}

// resend sends the unanswered pub and dm frames again on the new
// connection cn, byte for byte, in seq order, while they are fresh: the
// server answers each as it answered its first copy if it had accepted
// it, and with replay_seq if it had not (it never will: cn's hello has a
// greater seq). A frame too old to be fresh is given up: its request
// returns ErrConnectionLost.
func (c *Client) resend(ctx context.Context, cn *conn) error {
	c.mu.Lock()
	list := make([]*unacked, 0, len(c.unacked))
	for cid, u := range c.unacked {
		// Keep a margin of a second for the trip and the clocks.
		if c.now().After(u.ts.Add(cn.fv.Skew - time.Second)) {
			delete(c.unacked, cid)
			close(u.expired)
			continue
		}
		list = append(list, u)
	}
	c.mu.Unlock()
	slices.SortFunc(list, func(a, b *unacked) int { return cmp.Compare(a.seq, b.seq) })
	for _, u := range list {
		select {
		case cn.out <- u.frame:
		case <-cn.closed:
			return ErrConnectionLost
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// resendAnswer is the result of a request whose first copy lost its
// connection, from the answer to the copy sent again.
func resendAnswer(act string, a answer) (*protocol.Message, error) {
	switch protocol.CodeOf(a.err) {
	case "":
		if a.err != nil {
			return nil, a.err
		}
		return a.m, nil
	case protocol.CodeReplaySeq:
		// Not the session's failure: no protocol code is passed on.
		return nil, ErrNotAccepted
	case protocol.CodeReplayID, protocol.CodeStale:
		// The server no longer knows (another node, or too late).
		return nil, ErrConnectionLost
	}
	return nil, fmt.Errorf("sigil client: %s refused: %w", act, a.err)
}

// awaitResendable waits for the answer to a pub or dm frame. If the
// connection drops first, the frame stays pending: the reconnection sends
// it again (resend), and the answer to that copy settles the request.
func (c *Client) awaitResendable(ctx context.Context, cn *conn, env *protocol.Envelope, frame []byte, ans chan answer, forget func()) (*protocol.Message, error) {
	u, untrack := c.track(env, frame)
	defer untrack()
	first := func(a answer) (*protocol.Message, error) {
		if a.err != nil {
			if protocol.IsCode(a.err, protocol.CodeReplaySeq) {
				return nil, ErrNotAccepted
			}
			return nil, fmt.Errorf("sigil client: %s refused: %w", env.Action, a.err)
		}
		return a.m, nil
	}
	select {
	case a := <-ans:
		return first(a)
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-cn.done:
	}
	// The answer may have been dispatched just before the reader ended.
	select {
	case a := <-ans:
		return first(a)
	default:
	}
	select {
	case a := <-ans:
		return resendAnswer(env.Action, a)
	case <-u.expired:
		forget()
		if u.notAccepted {
			return nil, ErrNotAccepted
		}
		return nil, ErrConnectionLost
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("%w: %w", ErrConnectionLost, ctx.Err())
	case <-c.done:
		forget()
		return nil, fmt.Errorf("%w: %w", ErrConnectionLost, c.Err())
	}
}
