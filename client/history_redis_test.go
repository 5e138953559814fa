package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// TestRestartWithRedisHistory restarts a server whose history is in Redis
// — gracefully (SIGTERM: Shutdown), then abruptly (as SIGKILL: the
// connections drop, nothing is drained) — while a publisher and three
// subscribers run. Every message whose Publish returned nil reaches every
// subscriber exactly once, in the stream's order, with no gap: the
// subscribers recover from Redis what they missed.
func TestRestartWithRedisHistory(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	e := newEnv(t, func(c *server.Config) {
		cc, err := server.NewCluster(server.ClusterConfig{Redis: server.RedisConfig{URL: rs.URL, Prefix: "hist:", OpTimeout: 20 * time.Second},
			Secret: bytes.Repeat([]byte("sigil client test cluster secret "), 2), Heartbeat: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cc.Close)
		cc.Configure(c)
		c.Policy = historyPolicy(t, 10000)
		c.Refresh = sharedRefresh
	})
	ctx := ctxT(t)
	var gaps sync.Map
	type rec struct {
		mu  sync.Mutex
		got []client.Message
	}
	subs := make([]*rec, 3)
	for i := range subs {
		r := &rec{}
		subs[i] = r
		c := e.dial([]string{"alice", "bob", "carol"}[i], nil)
		s, err := c.Subscribe(ctx, "rooms.restart", client.OnGap(func(g client.Gap) { gaps.Store(fmt.Sprint(i, g), g) }))
		must(t, err)
		go func() {
			for m := range s.C() {
				r.mu.Lock()
				r.got = append(r.got, *m)
				r.mu.Unlock()
			}
		}()
	}
	pub := e.dial("bob", nil)
	var mu sync.Mutex
	results := map[int]error{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			err := pub.Publish(ctx, "rooms.restart", numbered{P: 1, N: i})
			mu.Lock()
			results[i] = err
			mu.Unlock()
		}
	}()
	acked := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, err := range results {
			if err == nil {
				n++
			}
		}
		return n
	}
	waitFor(t, "publishes before the restarts", func() bool { return acked() >= 20 })
	e.restart() // SIGTERM
	n := acked()
	waitFor(t, "publishes after the graceful restart", func() bool { return acked() >= n+20 })
	addr := e.hs.Listener.Addr().String()
	e.hs.CloseClientConnections() // SIGKILL: connections drop, nothing drained
	e.hs.Close()
	e.srv = nil
	e.restartStopped(addr)
	n = acked()
	waitFor(t, "publishes after the abrupt restart", func() bool { return acked() >= n+20 })
	close(stop)
	<-done
	must(t, pub.Publish(ctx, "rooms.restart", numbered{P: 9}))

	for i, r := range subs {
		waitFor(t, "the last message", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return len(r.got) > 0 && bytes.Contains(r.got[len(r.got)-1].Body, []byte(`"p":9`))
		})
		r.mu.Lock()
		seen := map[int]int{}
		for j, m := range r.got {
			if j > 0 && m.Position().Offset != r.got[j-1].Position().Offset+1 {
				t.Fatalf("subscriber %d: offset %d after %d", i, m.Position().Offset, r.got[j-1].Position().Offset)
			}
			var b numbered
			must(t, json.Unmarshal(m.Body, &b))
			if b.P == 1 {
				seen[b.N]++
			}
		}
		r.mu.Unlock()
		mu.Lock()
		for k, err := range results {
			switch {
			case seen[k] > 1:
				t.Fatalf("subscriber %d got message %d %d times", i, k, seen[k])
			case err == nil && seen[k] != 1:
				t.Fatalf("subscriber %d: message %d accepted, received %d times", i, k, seen[k])
			case errors.Is(err, client.ErrNotAccepted) && seen[k] != 0:
				t.Fatalf("subscriber %d: message %d not accepted, received", i, k)
			}
		}
		mu.Unlock()
	}
	gaps.Range(func(k, v any) bool { t.Fatalf("gap %v", v); return false })
	var ok, notAccepted, lost int
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, client.ErrNotAccepted):
			notAccepted++
		default:
			lost++
		}
	}
	t.Logf("%d publishes: %d accepted (each received once by each of 3 subscribers), %d certainly not accepted, %d unknown", len(results), ok, notAccepted, lost)
}
