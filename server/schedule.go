package server

import (
	"container/heap"
	"sync"
	"time"
)

// schedule holds each welcomed session's next duties for the sweeper: the
// next expiry warning or expiry (on the server's clock) in a min-heap, and
// the next keepalive ping (in real time) on a timing wheel, and a parked
// session's idle deadline on another (conn_park.go). A sweep takes
// what is due and touches only those sessions, instead of reading every
// session every second (at 10,000 idle sessions that alone was a quarter
// of the idle CPU, mostly cache misses). A session leaves both when its
// connection ends (conn.finish).
//
// Pings are the schedule's steady traffic, every session's every
// PingInterval, so they are on the wheel, where taking and re-setting one
// costs O(1) instead of two walks down a heap of every session (a cache
// miss a level): a slot per sweep tick, each slot the sessions whose ping
// falls due in that tick, round after round of the wheel.
//
// A parked session's idle deadline is on a wheel too, instead of a timer
// of its own: each timer that fired woke the process on its own and ran
// on a goroutine of its own, one per session per ping interval, while the
// sweeper is awake every tick anyway. The parker moves the deadline
// lazily, for each pong (flushConn.tdl); when the wheel's time comes, the
// sweeper finds it moved and puts the session back at the new one, or
// wakes it (flushConn.expired). So a silent peer is dropped within a
// sweep tick (SweepInterval) after its deadline, as an expiry is.
type schedule struct {
	mu     sync.Mutex
	expiry connHeap
	pings  wheel
	idle   wheel
}

// The two duties.
const (
	dutyExpiry = iota // conn.due: Unix ms on cfg.Now
	dutyPing          // conn.due: Unix ns, real time
	dutyIdle          // conn.due: Unix ns, real time: a parked session's idle deadline when last set
)

// newSchedule returns a schedule whose ping wheel has slots of tick (the
// sweep interval) and spans more than span (the ping interval), and
// whose idle wheel is as large.
func newSchedule(tick, span time.Duration) *schedule {
	tick = max(tick, 1)
	n := max(min(int64(span/tick)+2, 1<<16), 2)
	return &schedule{
		pings: wheel{duty: dutyPing, tick: int64(tick), slots: make([][]*conn, n)},
		idle:  wheel{duty: dutyIdle, tick: int64(tick), slots: make([][]*conn, n)},
	}
}

// wheel returns the wheel of duty (dutyPing, dutyIdle).
func (s *schedule) wheel(duty int) *wheel {
	if duty == dutyPing {
		return &s.pings
	}
	return &s.idle
}

// set (re)schedules c's duty at at.
func (s *schedule) set(c *conn, duty int, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.due[duty] = at
	if duty != dutyExpiry {
		w := s.wheel(duty)
		w.remove(c)
		w.add(c)
		return
	}
	if i := c.heapIdx - 1; i >= 0 {
		heap.Fix(&s.expiry, i)
	} else {
		heap.Push(&s.expiry, c)
	}
}

// remove takes c out of the schedule.
func (s *schedule) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := c.heapIdx - 1; i >= 0 {
		heap.Remove(&s.expiry, i)
	}
	s.pings.remove(c)
	s.idle.remove(c)
}

// popDue appends to out, and takes out of the schedule, the sessions
// whose duty is due at now: earliest first for the expiry duty, in no
// particular order for the wheels'.
func (s *schedule) popDue(duty int, now int64, out []*conn) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if duty != dutyExpiry {
		return s.wheel(duty).popDue(now, out)
	}
	h := &s.expiry
	for h.Len() > 0 && h.cs[0].due[dutyExpiry] <= now {
		out = append(out, heap.Pop(h).(*conn))
	}
	return out
}

// pingDue pings the sessions whose keepalive ping is due at now (real
// time), each written by the calling sweeper when the session's writer is
// idle (conn.ping), and schedules each one's next ping PingInterval after
// this one. due is scratch space, returned for reuse.
func (s *Server) pingDue(now time.Time, due []*conn) []*conn {
	due = s.sched.popDue(dutyPing, now.UnixNano(), due[:0])
	for i, c := range due {
		if c.welcomed.Load() && c.ping() {
			s.sched.set(c, dutyPing, max(c.due[dutyPing]+int64(s.cfg.PingInterval), now.UnixNano()+1))
		}
		due[i] = nil
	}
	return due
}

// idleDue checks the parked sessions whose idle deadline on the wheel
// has come (flushConn.expired): each is put back at its new deadline, or
// woken to meet it. due is scratch space, returned for reuse.
func (s *Server) idleDue(now time.Time, due []*conn) []*conn {
	due = s.sched.popDue(dutyIdle, now.UnixNano(), due[:0])
	for i, c := range due {
		if c.fc != nil {
			c.fc.expired()
		}
		due[i] = nil
	}
	return due
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

// connHeap is a min-heap of sessions by their expiry duty's time. heapIdx
// is the position + 1 (0: not in the heap), so a conn's zero value is
// "not scheduled".
type connHeap struct{ cs []*conn }

func (h *connHeap) Len() int           { return len(h.cs) }
func (h *connHeap) Less(i, j int) bool { return h.cs[i].due[dutyExpiry] < h.cs[j].due[dutyExpiry] }
func (h *connHeap) Swap(i, j int) {
	h.cs[i], h.cs[j] = h.cs[j], h.cs[i]
	h.cs[i].heapIdx, h.cs[j].heapIdx = i+1, j+1
}
func (h *connHeap) Push(x any) {
	c := x.(*conn)
	h.cs = append(h.cs, c)
	c.heapIdx = len(h.cs)
}
func (h *connHeap) Pop() any {
	n := len(h.cs) - 1
	c := h.cs[n]
	h.cs[n] = nil
	h.cs = h.cs[:n]
	c.heapIdx = 0
	return c
}

// wheel holds the sessions by their duty's time (conn.due[duty], Unix
// ns): slot t mod len(slots) holds the duties due in tick t (time ÷
// tick). A sweep ends on the current tick, which the next sweep sweeps
// again (a duty may fall due later in it); a duty due in a tick already
// swept goes to the current tick's slot; a slot's sessions due in a later
// round of the wheel stay in it. So no duty is taken early or left
// behind, whatever its time. conn.slot[k] and conn.pos[k] (k: duty-1)
// place a session (slot + 1; 0: not on the wheel), so that taking it off
// is O(1).
type wheel struct {
	duty  int
	tick  int64 // ns
	slots [][]*conn
	next  int64 // the first tick the next sweep sweeps
}

func (w *wheel) add(c *conn) {
	k := w.duty - 1
	t := max(c.due[w.duty]/w.tick, w.next)
	i := int(t % int64(len(w.slots)))
	c.slot[k], c.pos[k] = i+1, len(w.slots[i])
	w.slots[i] = append(w.slots[i], c)
}

func (w *wheel) remove(c *conn) {
	k := w.duty - 1
	if c.slot[k] == 0 {
		return
	}
	w.take(c.slot[k]-1, c.pos[k])
}

// take removes the session at position j of slot i, moving the slot's
// last one into its place.
func (w *wheel) take(i, j int) {
	k := w.duty - 1
	s := w.slots[i]
	c, last := s[j], s[len(s)-1]
	s[j], last.pos[k] = last, j
	s[len(s)-1] = nil
	w.slots[i] = s[:len(s)-1]
	c.slot[k], c.pos[k] = 0, 0
}

// popDue sweeps every tick up to now's, taking the sessions due.
func (w *wheel) popDue(now int64, out []*conn) []*conn {
	end := now / w.tick
	for t, n := w.next, 0; t <= end && n < len(w.slots); t, n = t+1, n+1 {
		i := int(t % int64(len(w.slots)))
		for j := len(w.slots[i]) - 1; j >= 0; j-- {
			if c := w.slots[i][j]; c.due[w.duty] <= now {
				out = append(out, c)
				w.take(i, j)
			}
		}
	}
	w.next = max(w.next, end)
	return out
}
