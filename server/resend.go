package server

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-ws/sigil/protocol"
)

// A client that lost its connection before the answer to a pub or dm
// frame sends the frame again, byte for byte; the replay check refuses
// the copy (replay_id), and resent answers it as its first copy was
// answered, from Config.Outcomes, without a second delivery (spec.md
// §20.10). sigil_resent_frames_total counts the copies answered so.

func newResentCounter(reg prometheus.Registerer) (prometheus.Counter, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_resent_frames_total",
		Help: "Copies of accepted pub and dm frames, sent again after a lost connection, answered as their first copy was."})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		c = are.ExistingCollector.(prometheus.Counter)
	}
	return c, nil
}

// resent answers a frame that failed verification with replay_id: if it
// is a pub or dm of this session whose first copy was accepted and
// answered, it is answered as that copy was (a reply {"duplicate": true},
// or the same error), and resent reports true. The frame's signature
// verified (the replay check runs after it), so its envelope is
// authentic.
func (c *conn) resent(frame []byte) bool {
	env, err := protocol.UnsafeEnvelope(frame)
	if err != nil || (env.Action != protocol.ActPub && env.Action != protocol.ActDM) || env.Session != c.sid {
		return false
	}
	s := c.srv
	ctx, cancel := context.WithTimeout(s.ctx, outcomeWait)
	defer cancel()
	answer, known, err := s.cfg.Outcomes.Answer(ctx, c.sid, env)
	if err != nil {
		s.storeError("outcome read", err)
	}
	if !known {
		return false
	}
	s.resentAnswers.Inc()
	if answer != nil {
		pe := *answer
		pe.Ref = env.ID
		c.sendError(env, &pe)
		return true
	}
	if env.Corr != "" {
		c.sendSigned(&protocol.Envelope{Action: protocol.ActReply, Corr: env.Corr, Channel: env.Channel}, protocol.DuplicateBody{Duplicate: true})
	}
	return true
}
