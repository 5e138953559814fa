package server

import (
	"container/heap"
	"sync"
	"time"
)

// schedule holds each welcomed session's next duties for the sweeper: the
// next expiry warning or expiry (on the server's clock) and the next
// keepalive ping (in real time), each in a min-heap. A sweep pops what is
// due and touches only those sessions, instead of reading every session
// every second (at 10,000 idle sessions that alone was a quarter of the
// idle CPU, mostly cache misses). A session leaves both heaps when its
// connection ends (conn.finish).
type schedule struct {
	mu    sync.Mutex
	heaps [2]connHeap
}

// The two duties.
const (
	dutyExpiry = iota // conn.due: Unix ms on cfg.Now
	dutyPing          // conn.due: Unix ns, real time
)

func newSchedule() *schedule {
	s := &schedule{}
	s.heaps[dutyExpiry].duty, s.heaps[dutyPing].duty = dutyExpiry, dutyPing
	return s
}

// set (re)schedules c's duty at at.
func (s *schedule) set(c *conn, duty int, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.heaps[duty]
	c.due[duty] = at
	if i := c.heapIdx[duty] - 1; i >= 0 {
		heap.Fix(h, i)
	} else {
		heap.Push(h, c)
	}
}

// remove takes c out of the schedule.
func (s *schedule) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for duty := range s.heaps {
		if i := c.heapIdx[duty] - 1; i >= 0 {
			heap.Remove(&s.heaps[duty], i)
		}
	}
}

// popDue appends to out, and takes out of the schedule, the sessions
// whose duty is due at now, earliest first.
func (s *schedule) popDue(duty int, now int64, out []*conn) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.heaps[duty]
	for h.Len() > 0 && h.cs[0].due[duty] <= now {
		out = append(out, heap.Pop(h).(*conn))
	}
	return out
}

// planExpiry schedules c's next expiry duty after now: the warning, or,
// once warned, the expiry itself.
func (s *schedule) planExpiry(c *conn, now time.Time, warning time.Duration) {
	next := c.exp.Load()
	if !c.warned.Load() {
		next -= warning.Milliseconds()
	}
	s.set(c, dutyExpiry, max(next, now.UnixMilli()+1))
}

// connHeap is a min-heap of sessions by one duty's time. heapIdx is the
// position + 1 (0: not in this heap), so a conn's zero value is "not
// scheduled".
type connHeap struct {
	cs   []*conn
	duty int
}

func (h *connHeap) Len() int           { return len(h.cs) }
func (h *connHeap) Less(i, j int) bool { return h.cs[i].due[h.duty] < h.cs[j].due[h.duty] }
func (h *connHeap) Swap(i, j int) {
	h.cs[i], h.cs[j] = h.cs[j], h.cs[i]
	h.cs[i].heapIdx[h.duty], h.cs[j].heapIdx[h.duty] = i+1, j+1
}
func (h *connHeap) Push(x any) {
	c := x.(*conn)
	h.cs = append(h.cs, c)
	c.heapIdx[h.duty] = len(h.cs)
}
func (h *connHeap) Pop() any {
	n := len(h.cs) - 1
	c := h.cs[n]
	h.cs[n] = nil
	h.cs = h.cs[:n]
	c.heapIdx[h.duty] = 0
	return c
}
