package server

import (
	"context"
	"sync"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// MemoryOutcomes is the OutcomeStore of a single node: the answers live in
// the node's memory, so a copy that reaches another node, or the node
// after a restart, is not answered by it (it is answered replay_id).
// Entries are pruned once past their frame's ts + skew.
type MemoryOutcomes struct {
	mu  sync.Mutex
	m   map[string]map[string]*memoryOutcome // sid -> frame id -> outcome
	ops int
	now func() time.Time
}

var _ OutcomeStore = (*MemoryOutcomes)(nil)

type memoryOutcome struct {
	until  time.Time     // when the id leaves the replay window
	done   chan struct{} // closed once answer is set
	answer *protocol.Error
}

// NewMemoryOutcomes returns an empty store on the clock now (nil:
// time.Now).
func NewMemoryOutcomes(now func() time.Time) *MemoryOutcomes {
	if now == nil {
		now = time.Now
	}
	return &MemoryOutcomes{m: map[string]map[string]*memoryOutcome{}, now: now}
}

// Begin implements OutcomeStore.
func (o *MemoryOutcomes) Begin(ctx context.Context, sid string, env *protocol.Envelope, until time.Time) (context.Context, func(*protocol.Error)) {
	oc := &memoryOutcome{until: until, done: make(chan struct{})}
	o.mu.Lock()
	s := o.m[sid]
	if s == nil {
		s = map[string]*memoryOutcome{}
		o.m[sid] = s
	}
	s[env.ID] = oc
	if o.ops++; o.ops%1024 == 0 {
		o.pruneLocked(o.now())
	}
	o.mu.Unlock()
	return ctx, func(answer *protocol.Error) {
		if answer != nil {
			answer = &protocol.Error{Code: answer.Code, Message: answer.Message}
		}
		oc.answer = answer
		close(oc.done)
	}
}

func (o *MemoryOutcomes) pruneLocked(now time.Time) {
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

// Answer implements OutcomeStore.
func (o *MemoryOutcomes) Answer(ctx context.Context, sid string, env *protocol.Envelope) (*protocol.Error, bool, error) {
	o.mu.Lock()
	oc := o.m[sid][env.ID]
	o.mu.Unlock()
	if oc == nil {
		return nil, false, nil
	}
	select {
	case <-oc.done:
		return oc.answer, true, nil
	case <-ctx.Done():
		return nil, false, nil
	}
}
