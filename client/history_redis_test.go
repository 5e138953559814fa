package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
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
	e := redisHistoryEnv(t, rs, "hist:")
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
	sigiltest.Eventually(t, "publishes before the restarts", func() bool { return acked() >= 20 })
	e.restart() // SIGTERM
	n := acked()
	sigiltest.Eventually(t, "publishes after the graceful restart", func() bool { return acked() >= n+20 })
	addr := e.hs.Listener.Addr().String()
	e.hs.CloseClientConnections() // SIGKILL: connections drop, nothing drained
	e.hs.Close()
	e.srv = nil
	e.restartStopped(addr)
	n = acked()
	sigiltest.Eventually(t, "publishes after the abrupt restart", func() bool { return acked() >= n+20 })
	close(stop)
	<-done
	must(t, pub.Publish(ctx, "rooms.restart", numbered{P: 9}))

	for i, r := range subs {
		sigiltest.Eventually(t, "the last message", func() bool {
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

// A node whose Redis subscription connection breaks misses the live
// publications made meanwhile (spec §19.3): Redis pub/sub keeps nothing.
// On a channel with history the loss is not silent: the next live deliver
// shows the offsets jump, the client reports a Gap, and the missed
// publications are read with History. Every acknowledged publish is then
// accounted for exactly once, live or from the history.
func TestClusterSubscriptionGapIsReportedAndReadable(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	e := redisHistoryEnv(t, rs, "gap:")
	ctx := ctxT(t)
	gaps := make(chan client.Gap, 100)
	alice := e.dial("alice", nil)
	sub, err := alice.Subscribe(ctx, "rooms.gap", client.OnGap(func(g client.Gap) { gaps <- g }))
	must(t, err)
	bob := e.dial("bob", nil)
	live := map[int]int{} // message number -> times received live
	sent := 0
	recv := func() numbered {
		m := next(t, sub)
		var n numbered
		must(t, json.Unmarshal(m.Body, &n))
		live[n.N]++
		return n
	}
	// upToLast receives what arrives until the last publication does, and
	// reports false if nothing arrives for a second meanwhile (the last one
	// fell in the gap too: the caller publishes another).
	upToLast := func() bool {
		for {
			select {
			case m, ok := <-sub.C():
				if !ok {
					t.Fatalf("subscription ended: %v", sub.Err())
				}
				var n numbered
				must(t, json.Unmarshal(m.Body, &n))
				live[n.N]++
				if n.N == sent-1 {
					return true
				}
			case <-time.After(time.Second):
				return false
			}
		}
	}
	publish := func() {
		err := bob.Publish(ctx, "rooms.gap", numbered{P: 1, N: sent})
		for protocol.CodeOf(err) == protocol.CodeUnavailable {
			// CLIENT KILL TYPE pubsub also cuts the node's shared
			// connection (it carries the revocation watch's
			// subscription), failing a check in flight: nothing was
			// accepted (spec §19.5), so the message is sent again.
			err = bob.Publish(ctx, "rooms.gap", numbered{P: 1, N: sent})
		}
		must(t, err)
		sent++
	}
	for range 3 {
		publish()
		recv()
	}
	// Cut every pub/sub connection of the node, and publish meanwhile,
	// until the subscriber reports a gap (the partition may subscribe
	// again before a publication falls in the window; then cut again).
	var gap client.Gap
	for found := false; !found; {
		if sent > 2000 {
			t.Fatal("no gap after 2000 publications around cut subscriptions")
		}
		host, port, _ := strings.Cut(rs.Addr, ":")
		if out, err := exec.Command("redis-cli", "-h", host, "-p", port, "CLIENT", "KILL", "TYPE", "pubsub").CombinedOutput(); err != nil {
			t.Fatalf("CLIENT KILL: %v %s", err, out)
		}
		for range 20 {
			publish()
		}
		// Receive until the last one: whatever was missed shows as a gap.
		for !upToLast() {
			publish()
		}
		select {
		case gap = <-gaps:
			found = true
		default:
		}
	}
	if gap.From.Epoch != gap.To.Epoch || gap.To.Offset <= gap.From.Offset {
		t.Fatalf("gap %+v", gap)
	}
	after := gap.From.Offset
	page, err := alice.History(ctx, "rooms.gap", client.HistoryQuery{After: &after, Limit: int(gap.To.Offset - gap.From.Offset)})
	must(t, err)
	if len(page.Messages) != int(gap.To.Offset-gap.From.Offset) {
		t.Fatalf("history of the gap %+v: %d messages", gap, len(page.Messages))
	}
	recovered := map[int]int{}
	for _, m := range page.Messages {
		var n numbered
		must(t, json.Unmarshal(m.Body, &n))
		recovered[n.N]++
	}
	for i := range sent {
		if live[i]+recovered[i] != 1 || live[i] > 1 {
			t.Fatalf("acknowledged publication %d: received live %d times, read from the gap's history %d times (gap %+v)", i, live[i], recovered[i], gap)
		}
	}
	t.Logf("%d publications; a gap of %d (offsets %d..%d) read back from the history", sent, len(page.Messages), gap.From.Offset+1, gap.To.Offset)
}

// redisHistoryEnv is a server in cluster mode on rs (key prefix prefix),
// whose rooms.> channels keep 10,000 messages of history.
func redisHistoryEnv(t *testing.T, rs *sigiltest.Redis, prefix string) *env {
	t.Helper()
	return redisNodeEnv(t, rs, prefix, "", nil)
}

// redisNodeEnv is redisHistoryEnv for node node (default: the host name)
// of a server whose nodes share keys (nil: the env's own).
func redisNodeEnv(t *testing.T, rs *sigiltest.Redis, prefix, node string, keys []*protocol.PrivateKey) *env {
	t.Helper()
	return newEnv(t, func(c *server.Config) {
		if keys != nil {
			c.Keys = keys
		}
		cc, err := server.NewCluster(server.ClusterConfig{Redis: server.RedisConfig{URL: rs.URL, Prefix: prefix, OpTimeout: 20 * time.Second},
			Secret: bytes.Repeat([]byte("sigil client test cluster secret "), 2), Heartbeat: time.Second, Node: node})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cc.Close)
		cc.Configure(c)
		c.Policy = historyPolicy(t, 10000)
		c.Refresh = sharedRefresh
	})
}
