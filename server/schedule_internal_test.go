package server

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The sweeper's schedule pops exactly the sessions that are due, earliest
// first, follows rescheduling, and forgets removed sessions (so a closed
// connection is not kept alive by it).
func TestSchedule(t *testing.T) {
	s := newSchedule()
	r := rand.New(rand.NewPCG(1, 2))
	cs := make([]*conn, 2000)
	for i := range cs {
		cs[i] = &conn{}
		s.set(cs[i], dutyPing, int64(r.IntN(1000)))
		s.set(cs[i], dutyExpiry, int64(r.IntN(1000)))
	}
	for _, c := range cs[:500] {
		s.set(c, dutyPing, 2000+int64(r.IntN(1000))) // rescheduled later
	}
	removed := map[*conn]bool{}
	for _, c := range cs[500:700] {
		s.remove(c)
		removed[c] = true
	}
	var popped []*conn
	for now := int64(0); now <= 3000; now += 100 {
		before := len(popped)
		popped = s.popDue(dutyPing, now, popped)
		for _, c := range popped[before:] {
			if c.due[dutyPing] > now || removed[c] || c.heapIdx[dutyPing] != 0 {
				t.Fatalf("popped at %d: due %d, removed %v, idx %d", now, c.due[dutyPing], removed[c], c.heapIdx[dutyPing])
			}
		}
		if !slices.IsSortedFunc(popped[before:], func(a, b *conn) int { return int(a.due[dutyPing] - b.due[dutyPing]) }) {
			t.Fatal("not earliest first")
		}
		if h := &s.heaps[dutyPing]; h.Len() > 0 && h.cs[0].due[dutyPing] <= now {
			t.Fatalf("a due session was left at %d", now)
		}
	}
	if len(popped) != len(cs)-len(removed) {
		t.Fatalf("popped %d, want %d", len(popped), len(cs)-len(removed))
	}
	if n := s.heaps[dutyExpiry].Len(); n != len(cs)-len(removed) {
		t.Fatalf("%d expiry duties, want %d", n, len(cs)-len(removed))
	}
	for _, c := range cs {
		s.remove(c)
	}
	if s.heaps[dutyExpiry].Len() != 0 || s.heaps[dutyPing].Len() != 0 {
		t.Fatal("sessions left after removal")
	}
}
