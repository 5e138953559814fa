package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// MemoryHistory is the single-node History: a ring of frames per channel,
// in memory. Its epochs are random and made when a stream is created, so a
// restart (or a stream dropped after all its frames expired) changes them.
// Publish allocates, signs, stores and publishes under the stream's lock:
// the offset order is the order in which the in-memory broker hands the
// frames to the hub.
type MemoryHistory struct {
	now func() time.Time
	b   Broker

	mu      sync.Mutex
	streams map[string]*memStream
	frames  int
	bytes   int64
}

type memStream struct {
	mu    sync.Mutex
	epoch string
	top   uint64     // offset of the last frame appended
	ring  []memEntry // the kept frames, oldest at head
	head  int        // index of the oldest frame in ring
	n     int        // number of frames kept
	h     *MemoryHistory
}

type memEntry struct {
	off   uint64
	at    time.Time
	frame []byte
}

// NewMemoryHistory returns an in-memory history on the clock now (nil:
// time.Now).
func NewMemoryHistory(now func() time.Time) *MemoryHistory {
	if now == nil {
		now = time.Now
	}
	return &MemoryHistory{now: now, streams: map[string]*memStream{}}
}

var _ History = (*MemoryHistory)(nil)

// Start implements History.
func (h *MemoryHistory) Start(b Broker) error {
	if b == nil {
		return errors.New("sigil: MemoryHistory needs a broker")
	}
	h.b = b
	return nil
}

func (h *MemoryHistory) stream(ch string) *memStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.streams[ch]
	if st == nil {
		st = &memStream{epoch: newEpoch(), h: h}
		h.streams[ch] = st
	}
	return st
}

// Exists reports whether stream ch was created (by a Read or a Publish).
func (h *MemoryHistory) Exists(_ context.Context, ch string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[ch] != nil, nil
}

// account adds n frames and b bytes to the totals.
func (h *MemoryHistory) account(n int, b int64) {
	h.mu.Lock()
	h.frames += n
	h.bytes += b
	h.mu.Unlock()
}

// Stats returns what the history holds.
func (h *MemoryHistory) Stats() HistoryStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HistoryStats{Streams: len(h.streams), Frames: h.frames, Bytes: h.bytes}
}

// Publish implements History.
func (h *MemoryHistory) Publish(ctx context.Context, ch string, lim protocol.HistoryLimits, sign func(protocol.Position) ([]byte, error)) (protocol.Position, error) {
	st := h.stream(ch)
	st.mu.Lock()
	defer st.mu.Unlock()
	now := h.now()
	st.trim(lim, now)
	pos := protocol.Position{Epoch: st.epoch, Offset: st.top + 1}
	frame, err := sign(pos)
	if err != nil {
		return protocol.Position{}, err
	}
	err = h.b.Publish(ctx, streamPublication(ch, frame, pos.Offset))
	if err != nil && !errors.Is(err, ErrNoSubscribers) {
		return protocol.Position{}, err
	}
	st.push(memEntry{off: pos.Offset, at: now, frame: frame}, lim.Size)
	st.top = pos.Offset
	return pos, err
}

// push appends e, dropping the oldest frame when the ring holds size.
func (st *memStream) push(e memEntry, size int) {
	if len(st.ring) != size {
		st.resize(size)
	}
	if st.n == size {
		old := &st.ring[st.head]
		st.h.account(-1, -int64(len(old.frame)))
		*old = memEntry{}
		st.head = (st.head + 1) % size
		st.n--
	}
	st.ring[(st.head+st.n)%size] = e
	st.n++
	st.h.account(1, int64(len(e.frame)))
}

// resize makes the ring hold size frames (the policy changed), keeping the
// newest.
func (st *memStream) resize(size int) {
	ring := make([]memEntry, size)
	drop := max(0, st.n-size)
	for i := range drop {
		st.h.account(-1, -int64(len(st.ring[(st.head+i)%len(st.ring)].frame)))
	}
	for i := drop; i < st.n; i++ {
		ring[i-drop] = st.ring[(st.head+i)%len(st.ring)]
	}
	st.ring, st.head, st.n = ring, 0, st.n-drop
}

// trim drops the frames older than lim.TTL.
func (st *memStream) trim(lim protocol.HistoryLimits, now time.Time) {
	if lim.TTL <= 0 {
		return
	}
	for st.n > 0 {
		e := &st.ring[st.head]
		if now.Sub(e.at) < lim.TTL {
			return
		}
		st.h.account(-1, -int64(len(e.frame)))
		*e = memEntry{}
		st.head = (st.head + 1) % len(st.ring)
		st.n--
	}
}

func (st *memStream) at(i int) *memEntry { return &st.ring[(st.head+i)%len(st.ring)] }

// Read implements History.
func (h *MemoryHistory) Read(_ context.Context, ch string, lim protocol.HistoryLimits, q HistoryQuery) (*HistoryPage, error) {
	st := h.stream(ch)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.trim(lim, h.now())
	p := &HistoryPage{Epoch: st.epoch, Top: st.top, Oldest: st.top + 1 - uint64(st.n)}
	if q.Limit <= 0 || st.n == 0 {
		return p, nil
	}
	// [lo, hi) are the indexes of the frames in the requested range.
	lo, hi := 0, st.n
	switch {
	case q.After != nil:
		if *q.After >= p.Oldest {
			lo = int(min(*q.After-p.Oldest+1, uint64(st.n)))
		}
	case q.Before != nil:
		if *q.Before <= p.Oldest {
			hi = 0
		} else {
			hi = int(min(*q.Before-p.Oldest, uint64(st.n)))
		}
	}
	if lo >= hi {
		return p, nil
	}
	forward := q.After != nil
	n := min(hi-lo, q.Limit)
	if !forward {
		lo = hi - n // the newest n
	}
	size := 0
	for i := range n {
		j := lo + i
		if !forward {
			j = hi - 1 - i // newest first, so that a byte cut keeps the newest
		}
		e := st.at(j)
		if q.MaxBytes > 0 && i > 0 && size+len(e.frame) > q.MaxBytes {
			n = i
			break
		}
		size += len(e.frame)
		p.Frames = append(p.Frames, StoredFrame{Offset: e.off, Frame: e.frame})
	}
	if !forward {
		for i, j := 0, len(p.Frames)-1; i < j; i, j = i+1, j-1 {
			p.Frames[i], p.Frames[j] = p.Frames[j], p.Frames[i]
		}
		p.More = hi-n > 0
	} else {
		p.More = lo+n < hi
	}
	return p, nil
}
