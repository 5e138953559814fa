package server_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// BenchmarkClusterDelivery: delivered frames per second with three
// publishers and 30 subscribers of one channel, on one node with the
// in-memory broker, and on three nodes sharing one Redis (a publisher and
// ten subscribers on each), on the same machine and in the same run. The
// clients run in this process too (their frames are signed before the
// clock starts), so the figures compare the two set-ups rather than state
// a server's capacity. It also reports the Redis commands per published
// frame (the replay check, the revocation check and the SPUBLISH):
//
//	go test -run '^$' -bench ClusterDelivery -benchtime 2000x ./server
func BenchmarkClusterDelivery(b *testing.B) {
	const pubs, subsPerNode = 3, 10
	var calls sync.Map // op -> *atomic.Int64
	observe := func(op string, _ time.Duration, _ error) {
		n, _ := calls.LoadOrStore(op, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	run := func(b *testing.B, nodes []*env) {
		var publishers, subscribers []*client
		for i := range pubs {
			publishers = append(publishers, nodes[i%len(nodes)].login("carol").connect())
		}
		for i := range subsPerNode * 3 {
			s := nodes[i%len(nodes)].login("bob").connect()
			s.subscribe("rooms.bench")
			subscribers = append(subscribers, s)
		}
		frames := make([][][]byte, pubs)
		for i, p := range publishers {
			for range b.N {
				frames[i] = append(frames[i], p.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.bench", Body: []byte(`{"t":"hello"}`)}))
			}
		}
		want := pubs * b.N
		var wg sync.WaitGroup
		for _, s := range subscribers {
			wg.Add(1)
			_ = s.ws.SetReadDeadline(time.Time{})
			go func() {
				defer wg.Done()
				for n := 0; n < want; {
					_, data, err := s.ws.ReadMessage()
					if err != nil {
						b.Errorf("after %d of %d: %v", n, want, err)
						return
					}
					// Counted, not verified: the clients share the machine
					// with the servers, and verifying would measure them.
					claims, err := protocol.UnsafeClaims(data)
					if err != nil {
						b.Error(err)
						return
					}
					if strings.Contains(string(claims), `"act":"deliver"`) {
						n++
					}
				}
			}()
		}
		calls.Clear()
		b.ResetTimer()
		start := time.Now()
		for i, p := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, f := range frames[i] {
					if err := p.ws.WriteMessage(websocket.TextMessage, f); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(want*len(subscribers))/el.Seconds(), "delivered/s")
		total := 0.0
		calls.Range(func(k, v any) bool {
			if op := k.(string); op == "replay.check" || op == "revocation.is_revoked" || op == "broker.publish" {
				total += float64(v.(*atomic.Int64).Load())
			}
			return true
		})
		if total > 0 {
			b.ReportMetric(total/float64(want), "redis-cmds/pub")
		}
	}
	b.Run("memory-1node", func(b *testing.B) {
		run(b, []*env{newEnv(b, func(c *server.Config) { c.SendQueue = 1 << 16 })})
	})
	b.Run("redis-3nodes", func(b *testing.B) {
		cl := newClusterEnv(b, 3, sigiltest.StartRedis(b).URL, "bench:", func(_ int, cc *server.ClusterConfig, c *server.Config) {
			if cc != nil {
				cc.Redis.Observe = observe
			}
			if c != nil {
				c.SendQueue = 1 << 16
			}
		})
		run(b, cl.nodes)
	})
}
