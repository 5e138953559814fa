package server

import (
	"context"
	"encoding/hex"
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
//
// The table holds every accepted pub and dm of the last window (about
// 60,000 entries at 2,000 publishes/s), so it is kept out of the garbage
// collector's way: the answered frames are a map of fixed-size keys and
// times, which holds no pointer and is not scanned, and they are pruned
// in the order they were answered, a few at a time, instead of by a scan
// of the whole table (a scan, and the mark of a table of pointers, were
// the tail of the publish→deliver latency).
type outcomes struct {
	mu      sync.Mutex
	done    map[outcomeKey]int64           // answered: until, Unix ns
	refused map[outcomeKey]*protocol.Error // the answered frames that were refused (few)
	pending map[outcomeKey]chan struct{}   // being handled; a channel once a copy waits for the answer
	order   []outcomeAt                    // the answered frames in the order they were answered, from head
	head    int
	skew    time.Duration
	answers prometheus.Counter // sigil_resent_frames_total
}

// outcomeKey names a frame: its session's sid and its id, both canonical
// UUIDs, as 16 bytes each.
type outcomeKey [32]byte

type outcomeAt struct {
	key   outcomeKey
	until int64
}

// outcomeWait bounds the wait for the answer of a frame still being
// handled (on the connection that dropped) when its copy arrives.
const outcomeWait = 5 * time.Second

func newOutcomes(skew time.Duration, reg prometheus.Registerer) (*outcomes, error) {
	o := &outcomes{done: map[outcomeKey]int64{}, refused: map[outcomeKey]*protocol.Error{},
		pending: map[outcomeKey]chan struct{}{}, skew: skew,
		answers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_resent_frames_total",
			Help: "Copies of accepted pub and dm frames, sent again after a lost connection, answered as their first copy was."})}
	if err := reg.Register(o.answers); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return nil, err
	}
	return o, nil
}

// keyOf returns the key of frame id of session sid; false if either is
// not a canonical UUID (a verified frame's always are).
func keyOf(sid, id string) (k outcomeKey, ok bool) {
	return k, uuidInto(k[:16], sid) && uuidInto(k[16:], id)
}

// uuidInto decodes a canonical UUID's 32 hex digits into dst.
func uuidInto(dst []byte, s string) bool {
	if len(s) != 36 {
		return false
	}
	var hx [32]byte
	copy(hx[0:8], s[0:8])
	copy(hx[8:12], s[9:13])
	copy(hx[12:16], s[14:18])
	copy(hx[16:20], s[19:23])
	copy(hx[20:32], s[24:36])
	_, err := hex.Decode(dst, hx[:])
	return err == nil
}

// begin records that frame m of session sid is being handled; end, which
// the caller must call, records its answer.
func (o *outcomes) begin(sid string, m *protocol.Message, now time.Time) (end func(*protocol.Error)) {
	k, ok := keyOf(sid, m.ID)
	if !ok {
		return func(*protocol.Error) {}
	}
	until := m.Time().Add(o.skew).UnixNano()
	o.mu.Lock()
	o.pending[k] = nil
	o.pruneLocked(now.UnixNano())
	o.mu.Unlock()
	return func(err *protocol.Error) {
		o.mu.Lock()
		wait := o.pending[k]
		delete(o.pending, k)
		o.done[k] = until
		if err != nil {
			o.refused[k] = err
		}
		o.order = append(o.order, outcomeAt{k, until})
		o.mu.Unlock()
		if wait != nil {
			close(wait)
		}
	}
}

// pruneLocked forgets the answers whose window has ended, from the oldest
// answered, and stops at the first whose window has not: each call does a
// few steps, and a frame answered out of its ts order is kept a little
// longer than its window, which is harmless.
func (o *outcomes) pruneLocked(now int64) {
	for o.head < len(o.order) && o.order[o.head].until < now {
		k := o.order[o.head].key
		delete(o.done, k)
		delete(o.refused, k)
		o.head++
	}
	if o.head == len(o.order) {
		o.order, o.head = o.order[:0], 0
	} else if o.head >= 1024 && o.head*2 >= len(o.order) {
		o.order = append(o.order[:0], o.order[o.head:]...)
		o.head = 0
	}
}

// await returns the answer of frame id of session sid: known is false if
// the frame is not in the table, or still being handled after
// outcomeWait or when ctx ends.
func (o *outcomes) await(ctx context.Context, sid, id string) (known bool, refused *protocol.Error) {
	k, ok := keyOf(sid, id)
	if !ok {
		return false, nil
	}
	o.mu.Lock()
	if _, ok := o.done[k]; ok {
		defer o.mu.Unlock()
		return true, o.refused[k]
	}
	wait, ok := o.pending[k]
	if !ok {
		o.mu.Unlock()
		return false, nil
	}
	if wait == nil {
		wait = make(chan struct{})
		o.pending[k] = wait
	}
	o.mu.Unlock()
	t := time.NewTimer(outcomeWait)
	defer t.Stop()
	select {
	case <-wait:
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, known = o.done[k]
	return known, o.refused[k]
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
	known, refused := c.srv.outcomes.await(c.srv.ctx, c.sid, env.ID)
	if !known {
		return false
	}
	c.srv.outcomes.answers.Inc()
	if refused != nil {
		pe := *refused
		pe.Ref = env.ID
		c.sendError(env, &pe)
		return true
	}
	if env.Corr != "" {
		c.sendSigned(&protocol.Envelope{Action: protocol.ActReply, Corr: env.Corr, Channel: env.Channel}, protocol.DuplicateBody{Duplicate: true})
	}
	return true
}
