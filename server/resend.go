package server

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigil-ws/sigil/protocol"
)

// outcomes remembers, per session, how each accepted pub and dm frame was
// answered, until its ts + skew: a client that lost its connection before
// the answer sends the frame again, byte for byte, and is told that it was
// accepted (a reply {"duplicate": true}) or how it was refused, without a
// second delivery (spec.md §20.10). The replay check already refuses the
// frame itself (replay_id); this only answers it.
type outcomes struct {
	mu      sync.Mutex
	m       map[string]map[string]*outcome // sid -> frame id -> outcome
	ops     int
	skew    time.Duration
	answers prometheus.Counter // sigil_resent_frames_total
}

type outcome struct {
	until time.Time     // when the id leaves the replay window
	done  chan struct{} // closed once err is set
	err   *protocol.Error
}

// outcomeWait bounds the wait for the answer of a frame still being
// handled (on the connection that dropped) when its copy arrives.
const outcomeWait = 5 * time.Second

func newOutcomes(skew time.Duration, reg prometheus.Registerer) (*outcomes, error) {
	o := &outcomes{m: map[string]map[string]*outcome{}, skew: skew,
		answers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_resent_frames_total",
			Help: "Copies of accepted pub and dm frames, sent again after a lost connection, answered as their first copy was."})}
	if err := reg.Register(o.answers); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return nil, err
	}
	return o, nil
}

// begin records that frame m of session sid is being handled; end, which
// the caller must call, records its answer.
func (o *outcomes) begin(sid string, m *protocol.Message, now time.Time) (end func(*protocol.Error)) {
	oc := &outcome{until: m.Time().Add(o.skew), done: make(chan struct{})}
	o.mu.Lock()
	s := o.m[sid]
	if s == nil {
		s = map[string]*outcome{}
		o.m[sid] = s
	}
	s[m.ID] = oc
	if o.ops++; o.ops%1024 == 0 {
		o.pruneLocked(now)
	}
	o.mu.Unlock()
	return func(err *protocol.Error) {
		oc.err = err
		close(oc.done)
	}
}

func (o *outcomes) pruneLocked(now time.Time) {
	for sid, s := range o.m {
		for id, oc := range s {
			if now.After(oc.until) {
				delete(s, id)
			}
		}
		if len(s) == 0 {
			delete(o.m, sid)
		}
	}
}

// lookup returns the outcome of frame id of session sid, if it is known.
func (o *outcomes) lookup(sid, id string) *outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[sid][id]
}

// resent answers a frame that failed verification with replay_id: if it
// is a pub or dm of this session whose first copy was accepted, it is
// answered as that copy was (a reply {"duplicate": true}, or the same
// error), and resent reports true. The frame's signature verified (the
// replay check runs after it), so its envelope is authentic.
func (c *conn) resent(frame []byte) bool {
	env, err := protocol.UnsafeEnvelope(frame)
	if err != nil || (env.Action != protocol.ActPub && env.Action != protocol.ActDM) || env.Session != c.sid {
		return false
	}
	oc := c.srv.outcomes.lookup(c.sid, env.ID)
	if oc == nil {
		return false
	}
	select {
	case <-oc.done:
	case <-time.After(outcomeWait):
		return false
	case <-c.srv.ctx.Done():
		return false
	}
	c.srv.outcomes.answers.Inc()
	if oc.err != nil {
		pe := *oc.err
		pe.Ref = env.ID
		c.sendError(env, &pe)
		return true
	}
	if env.Corr != "" {
		c.sendSigned(&protocol.Envelope{Action: protocol.ActReply, Corr: env.Corr, Channel: env.Channel}, protocol.DuplicateBody{Duplicate: true})
	}
	return true
}
