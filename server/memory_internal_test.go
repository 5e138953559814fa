package server

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// TestIdleMemoryReturnDue: a return is due only once collections, frames
// and connections have all stood still for the whole quiet period, and
// only when a collection and a return would give back at least minReturn
// and a quarter of the heap (memory.go). The collector is off during the
// test, so that the garbage made here stays what it is; it starts from a
// return of its own, since a collection alone leaves the free heap that
// earlier tests' garbage became (which made "nothing to give back" fail,
// one run in a few, after the heavier tests).
func TestIdleMemoryReturnDue(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	debug.FreeOSMemory()
	r := newMemReturn()
	t0 := time.Unix(1000, 0)
	const quiet = 2 * time.Second
	if _, ok := r.due(t0, quiet, 1, 1); ok {
		t.Fatal("a return due at the first look")
	}
	if _, ok := r.due(t0.Add(quiet), quiet, 1, 1); ok {
		t.Fatal("a return due with nothing to give back")
	}

	// A burst's garbage: 64 MiB made and dropped since the last collection.
	sink := make([][]byte, 0, 64)
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	runtime.KeepAlive(sink)
	sink = nil

	if _, ok := r.due(t0.Add(quiet+time.Second), quiet, 2, 1); ok {
		t.Fatal("a return due in the tick a frame was read")
	}
	t1 := t0.Add(quiet + time.Second)
	if _, ok := r.due(t1.Add(quiet/2), quiet, 2, 1); ok {
		t.Fatal("a return due before the quiet period ended")
	}
	if _, ok := r.due(t1.Add(quiet), quiet, 2, 2); ok {
		t.Fatal("a return due in the tick a connection was accepted")
	}
	t2 := t1.Add(quiet)
	back, ok := r.due(t2.Add(quiet), quiet, 2, 2)
	if !ok || back < 63<<20 { // the 64 MiB, give or take the heap's own accounting
		t.Fatalf("no return due after a quiet period with 64 MiB of garbage: %d bytes, %v", back, ok)
	}

	// What the return does: the garbage is collected and every free page
	// goes back to the system.
	debug.FreeOSMemory()
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	rtmetrics.Read(s)
	if free := s[0].Value.Uint64(); free >= minReturn {
		t.Fatalf("free heap after the return: %d bytes", free)
	}
	if _, ok := r.due(t2.Add(2*quiet), quiet, 2, 2); ok {
		t.Fatal("a return due in the tick its own collection ran")
	}
	if back, ok := r.due(t2.Add(3*quiet), quiet, 2, 2); ok {
		t.Fatalf("a return due again with nothing more to give back (%d bytes)", back)
	}
}

// TestIdleMemoryReturn: a server left idle after a burst returns what the
// burst left (the sweeper's tick, end to end), and counts it in its
// metrics.
func TestIdleMemoryReturn(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	srv, err := New(Config{Authenticator: StaticUsers{Doc: &UsersDoc{}}, IdleMemoryReturn: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(t.Context())
	sink := make([][]byte, 0, 64)
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	runtime.KeepAlive(sink)
	sink = nil
	sigiltest.Eventually(t, "a return after the burst", func() bool { return counterValue(srv.m.memoryReturns) > 0 })
	if got := counterValue(srv.m.memoryReturned); got < 64<<20 {
		t.Fatalf("returned %v bytes, want at least the 64 MiB burst", got)
	}
}

// counterValue is c's value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
