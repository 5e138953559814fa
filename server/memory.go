package server

import (
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync/atomic"
	"time"
)

// Idle memory return.
//
// Go's collector lets the heap grow to about twice what is live before it
// collects (GOGC=100), and its scavenger gives free heap back to the
// system only down to about that goal. A burst of connections (logins and
// hellos, whose garbage is several times the state a session keeps) so
// leaves an idle server with as much free heap as live heap, resident for
// as long as it stays idle: at 10,000 idle sessions, about 2.6 KiB a
// session of its 10.6 KiB RSS.
//
// So once the server has read no frame and accepted no connection, and
// the process has run no garbage collection, for Config.IdleMemoryReturn
// (an idle session's pings and pongs allocate nothing), and what
// a collection and a return would give back (free heap not yet returned,
// and the heap allocated since the last collection beyond what it found
// live) is at least minReturn and a quarter of the heap, the sweeper has
// debug.FreeOSMemory run: one collection, and every free page returned. This is the policy of the JVM's periodic
// collection when idle (JEP 346). It costs one collection per burst, and
// never runs under load, when collections follow each other.

// minReturn is the least free heap worth a return.
const minReturn = 8 << 20

// memReturn is the sweeper's state for returning memory (sweeper only,
// but running, which the returning goroutine clears).
type memReturn struct {
	samples []rtmetrics.Sample
	cycles  uint64    // collections seen at the last look
	frames  uint64    // frames read (Server.frames) seen then
	conns   uint64    // connections accepted (Server.connSeq) seen then
	quiet   time.Time // since when none of the three has moved
	running atomic.Bool
}

func newMemReturn() *memReturn {
	return &memReturn{samples: []rtmetrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}}
}

// maybeReturnMemory runs a return if the server and the process have
// been quiet for IdleMemoryReturn and hold enough to give back (see
// above); the sweeper calls it each tick.
func (s *Server) maybeReturnMemory(now time.Time) {
	if s.cfg.IdleMemoryReturn < 0 {
		return
	}
	r := s.memReturn
	back, ok := r.due(now, s.cfg.IdleMemoryReturn, s.frames.Load(), s.connSeq.Load())
	if !ok {
		return
	}
	r.running.Store(true)
	go func() {
		defer r.running.Store(false)
		debug.FreeOSMemory()
		s.m.memoryReturns.Inc()
		s.m.memoryReturned.Add(float64(back))
	}()
}

// due reports whether a return is due at now, and what it would give
// back: nothing has moved (collections, frames, connections) for after,
// and that is at least minReturn and a quarter of the heap.
func (r *memReturn) due(now time.Time, after time.Duration, frames, conns uint64) (uint64, bool) {
	if r.running.Load() {
		return 0, false
	}
	rtmetrics.Read(r.samples)
	cycles := r.samples[0].Value.Uint64()
	free, objects, live := r.samples[1].Value.Uint64(), r.samples[2].Value.Uint64(), r.samples[3].Value.Uint64()
	back := free + objects - min(live, objects) // what a collection and a return would give back
	if cycles != r.cycles || frames != r.frames || conns != r.conns || r.quiet.IsZero() {
		r.cycles, r.frames, r.conns, r.quiet = cycles, frames, conns, now
		return 0, false
	}
	if now.Sub(r.quiet) < after || back < minReturn || back < (free+objects)/4 {
		return 0, false
	}
	return back, true
}
