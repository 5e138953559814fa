package server

import (
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// MemoryOutcomes is the OutcomeStore of a single node: the answers live in
// the node's memory, so a copy that reaches another node, or the node
// after a restart, is not answered by it (it is answered replay_id).
// Entries are forgotten once past their frame's ts + skew.
//
// The table holds every accepted pub and dm of the last window (about
// 60,000 entries at 2,000 publishes/s), so it is kept out of the garbage
// collector's way: the answered frames are a map of fixed-size keys and
// times, which holds no pointer and is not scanned, and they are pruned
// in the order they were answered, a few at a time, instead of by a scan
// of the whole table (a scan, and the mark of a table of pointers, were
// the tail of the publish→deliver latency).
type MemoryOutcomes struct {
	mu      sync.Mutex
	done    map[outcomeKey]int64           // answered: until, Unix ns
	refused map[outcomeKey]*protocol.Error // the answered frames that were refused (few)
	pending map[outcomeKey]chan struct{}   // being handled; a channel once a copy waits for the answer
	order   []outcomeAt                    // the answered frames in the order they were answered, from head
	head    int
	now     func() time.Time
}

var _ OutcomeStore = (*MemoryOutcomes)(nil)

// outcomeKey names a frame: its session's sid and its id, both canonical
// UUIDs, as 16 bytes each.
type outcomeKey [32]byte

type outcomeAt struct {
	key   outcomeKey
	until int64
}

// NewMemoryOutcomes returns an empty store on the clock now (nil:
// time.Now).
func NewMemoryOutcomes(now func() time.Time) *MemoryOutcomes {
	if now == nil {
		now = time.Now
	}
	return &MemoryOutcomes{done: map[outcomeKey]int64{}, refused: map[outcomeKey]*protocol.Error{},
		pending: map[outcomeKey]chan struct{}{}, now: now}
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

// Begin implements OutcomeStore.
func (o *MemoryOutcomes) Begin(ctx context.Context, sid string, env *protocol.Envelope, until time.Time) (context.Context, func(*protocol.Error)) {
	k, ok := keyOf(sid, env.ID)
	if !ok {
		return ctx, func(*protocol.Error) {}
	}
	u := until.UnixNano()
	o.mu.Lock()
	o.pending[k] = nil
	o.pruneLocked(o.now().UnixNano())
	o.mu.Unlock()
	return ctx, func(answer *protocol.Error) {
		if answer != nil {
			answer = &protocol.Error{Code: answer.Code, Message: answer.Message}
		}
		o.mu.Lock()
		wait := o.pending[k]
		delete(o.pending, k)
		o.done[k] = u
		if answer != nil {
			o.refused[k] = answer
		}
		o.order = append(o.order, outcomeAt{k, u})
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
func (o *MemoryOutcomes) pruneLocked(now int64) {
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

// Answer implements OutcomeStore: a frame still being handled is waited
// for until ctx ends.
func (o *MemoryOutcomes) Answer(ctx context.Context, sid string, env *protocol.Envelope) (*protocol.Error, bool, error) {
	k, ok := keyOf(sid, env.ID)
	if !ok {
		return nil, false, nil
	}
	o.mu.Lock()
	if _, ok := o.done[k]; ok {
		defer o.mu.Unlock()
		return o.refused[k], true, nil
	}
	wait, ok := o.pending[k]
	if !ok {
		o.mu.Unlock()
		return nil, false, nil
	}
	if wait == nil {
		wait = make(chan struct{})
		o.pending[k] = wait
	}
	o.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, false, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, known := o.done[k]
	return o.refused[k], known, nil
}
