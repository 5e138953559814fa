package server

import (
	"math/rand/v2"
	"testing"
)

// The staggered keepalive: whatever the sweeps' timing (a sweep may cover
// several ticks when one was late), every slot is pinged exactly once
// per slots ticks, and a sweep of one tick pings one slot in slots.
func TestPingDueStaggered(t *testing.T) {
	for _, slots := range []int64{1, 2, 30, 97} {
		r := rand.New(rand.NewPCG(1, uint64(slots)))
		last := make([]int64, slots) // the tick of each slot's last ping
		for i := range last {
			last[i] = -1
		}
		var done int64
		for tick := int64(1); tick < 40*slots; tick += 1 + int64(r.IntN(3))/2 {
			from := max(done, tick-slots)
			n := 0
			for slot := range slots {
				if pingDue(slot+slots*int64(r.IntN(1000)), from, tick, slots) {
					n++
					if last[slot] >= 0 && tick-last[slot] > slots+1 {
						t.Fatalf("slots %d: slot %d pinged at %d after %d", slots, slot, tick, last[slot])
					}
					last[slot] = tick
				}
			}
			if want := min(tick-from, slots); int64(n) != want {
				t.Fatalf("slots %d: the sweep of ticks (%d, %d] pinged %d slots, want %d", slots, from, tick, n, want)
			}
			done = tick
		}
	}
}
