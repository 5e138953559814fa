package server

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The sweeper's schedule pops exactly the sessions that are due, expiries
// earliest first, follows rescheduling, and forgets removed sessions (so
// a closed connection is not kept alive by it).
func TestSchedule(t *testing.T) {
	s := newSchedule(100, 1000)
	r := rand.New(rand.NewPCG(1, 2))
	cs := make([]*conn, 2000)
	for i := range cs {
		cs[i] = &conn{}
		s.set(cs[i], dutyPing, int64(r.IntN(1000)))
		s.set(cs[i], dutyExpiry, int64(r.IntN(1000)))
	}
	for _, c := range cs[:500] {
		s.set(c, dutyPing, 2000+int64(r.IntN(1000))) // rescheduled later
		s.set(c, dutyExpiry, 2000+int64(r.IntN(1000)))
	}
	removed := map[*conn]bool{}
	for _, c := range cs[500:700] {
		s.remove(c)
		removed[c] = true
	}
	for _, duty := range []int{dutyExpiry, dutyPing} {
		var popped []*conn
		for now := int64(0); now <= 3000; now += 100 {
			before := len(popped)
			popped = s.popDue(duty, now, popped)
			for _, c := range popped[before:] {
				if c.due[duty] > now || c.due[duty] <= now-100 || removed[c] || c.heapIdx != 0 && duty == dutyExpiry || c.slot[dutyPing-1] != 0 && duty == dutyPing {
					t.Fatalf("duty %d popped at %d: due %d, removed %v", duty, now, c.due[duty], removed[c])
				}
			}
			if duty == dutyExpiry && !slices.IsSortedFunc(popped[before:], func(a, b *conn) int { return int(a.due[duty] - b.due[duty]) }) {
				t.Fatal("expiries not earliest first")
			}
		}
		if len(popped) != len(cs)-len(removed) {
			t.Fatalf("duty %d: popped %d, want %d", duty, len(popped), len(cs)-len(removed))
		}
	}
	for _, c := range cs {
		s.set(c, dutyPing, 5000)
		s.set(c, dutyExpiry, 5000)
		s.remove(c)
	}
	if s.expiry.Len() != 0 || slices.ContainsFunc(s.pings.slots, func(sl []*conn) bool { return len(sl) > 0 }) {
		t.Fatal("sessions left after removal")
	}
}

// The ping wheel takes each ping at the first sweep at or after its time,
// never earlier and never a round of the wheel later: with sweeps that do
// not fall on tick boundaries, pings due later in the tick being swept,
// pings set in the past, pings many rounds ahead, a sweep that comes late
// by more than the whole wheel, and each ping re-set an interval after it
// was due, as the sweeper does.
func TestPingWheel(t *testing.T) {
	const tick, interval = 100, 1000
	s := newSchedule(tick, interval)
	r := rand.New(rand.NewPCG(3, 4))
	cs := make([]*conn, 3000)
	for i := range cs {
		cs[i] = &conn{}
		switch i % 3 {
		case 0:
			s.set(cs[i], dutyPing, int64(r.IntN(interval)))
		case 1:
			s.set(cs[i], dutyPing, int64(r.IntN(20*interval))) // many rounds ahead
		default:
			s.set(cs[i], dutyPing, -int64(r.IntN(interval))) // in the past
		}
	}
	pings := map[*conn]int{}
	prev := int64(-1 << 40)
	var due []*conn
	for now := int64(0); now < 40*interval; {
		due = s.popDue(dutyPing, now, due[:0])
		for _, c := range due {
			if c.due[dutyPing] > now || c.due[dutyPing] <= prev {
				t.Fatalf("ping due at %d taken at %d (previous sweep %d)", c.due[dutyPing], now, prev)
			}
			pings[c]++
			s.set(c, dutyPing, max(c.due[dutyPing]+interval, now+1))
		}
		for _, c := range cs {
			if c.due[dutyPing] <= now {
				t.Fatalf("ping due at %d left after the sweep at %d", c.due[dutyPing], now)
			}
		}
		prev = now
		if now == 20*interval {
			now += 3 * interval // a sweep late by more than the wheel
		} else {
			now += 37
		}
	}
	for _, c := range cs {
		if pings[c] < 15 {
			t.Fatalf("a session was pinged %d times in 40 intervals", pings[c])
		}
	}
}
