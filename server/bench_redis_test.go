package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

// BenchmarkRedisReplayCheck measures one replay check (spec §7 step 8) on
// the memory store and on a real redis-server over loopback, serially (the
// round trip) and from parallel goroutines (with rueidis' auto-pipelining),
// in one run so the figures compare:
//
//	go test -run '^$' -bench RedisReplayCheck -benchmem ./server
func BenchmarkRedisReplayCheck(b *testing.B) {
	srv := sigiltest.StartRedis(b)
	r := newTestRedis(b, srv)
	stores := []struct {
		name  string
		store protocol.ReplayStore
	}{
		{"memory", protocol.NewMemoryReplayStore(0, nil)},
		{"redis", NewRedisReplayStore(r, nil)},
	}
	ctx := context.Background()
	// ids are made before the timer runs, so uuid generation is not
	// measured; they repeat after len(ids) checks, under new sessions.
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	for _, s := range stores {
		b.Run(s.name, func(b *testing.B) {
			sid := uuid.NewString()
			now := time.Now()
			var seq uint64
			b.ReportAllocs()
			for b.Loop() {
				if err := s.store.Check(ctx, nextCheck(&sid, &seq, ids, now)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.name+"-parallel16", func(b *testing.B) {
			now := time.Now()
			b.ReportAllocs()
			b.SetParallelism(16) // many sessions at once, as on a server
			b.RunParallel(func(pb *testing.PB) {
				sid := uuid.NewString()
				var seq uint64
				for pb.Next() {
					if err := s.store.Check(ctx, nextCheck(&sid, &seq, ids, now)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// nextCheck is the benchmarks' next replay check: seq+1, cycling through
// ids, with a new session each time they wrap around.
func nextCheck(sid *string, seq *uint64, ids []string, now time.Time) protocol.ReplayCheck {
	*seq++
	if *seq%uint64(len(ids)) == 0 {
		*sid = uuid.NewString()
	}
	return protocol.ReplayCheck{Session: *sid, ID: ids[*seq%uint64(len(ids))], Seq: *seq,
		IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Hour)}
}
