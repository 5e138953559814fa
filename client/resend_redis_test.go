package client_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// TestPublishExactlyOnceAcrossNodes: two nodes on one Redis, a subscriber
// on each, and a publisher whose connection (through a proxy) is cut in
// the middle of a Publish and comes back on the OTHER node. When the
// frame was accepted and only the reply was lost, the copy the client
// sends again is answered there as accepted: Publish returns nil and
// each subscriber got the message once. When the frame never reached the
// server, the copy is certainly refused (replay_seq), the client sends
// the message again as a new frame: Publish returns nil and each
// subscriber got it once.
func TestPublishExactlyOnceAcrossNodes(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	a := redisNodeEnv(t, rs, "xnode:", "node-a", nil)
	b := redisNodeEnv(t, rs, "xnode:", "node-b", a.keys)
	hostOf := func(e *env) string { return strings.TrimPrefix(strings.TrimSuffix(e.url, "/v1/ws"), "ws://") }
	p := newCutProxy(t, hostOf(a))
	moveTo := func(e *env) { // the next connection through the proxy goes to e
		p.mu.Lock()
		p.target = hostOf(e)
		p.mu.Unlock()
	}
	ctx := ctxT(t)
	var subs []*client.Subscription
	for _, e := range []*env{a, b} {
		s, err := e.dial("alice", nil).Subscribe(ctx, "rooms.xnode")
		must(t, err)
		subs = append(subs, s)
	}
	marker := b.dial("carol", nil)
	bob := a.dialVia(p, "bob", nil)

	// received returns, for each subscriber, the bodies it got before a
	// marker published after them.
	markers := 0
	received := func() [][]numbered {
		markers++
		must(t, marker.Publish(ctx, "rooms.xnode", numbered{P: 9, N: markers}))
		var all [][]numbered
		for _, s := range subs {
			var got []numbered
			for {
				var n numbered
				must(t, json.Unmarshal(next(t, s).Body, &n))
				if n == (numbered{P: 9, N: markers}) {
					break
				}
				got = append(got, n)
			}
			all = append(all, got)
		}
		return all
	}
	once := func(what string, want numbered) {
		t.Helper()
		for i, got := range received() {
			if len(got) != 1 || got[0] != want {
				t.Fatalf("%s: subscriber %d got %v, want %v once", what, i, got, want)
			}
		}
	}
	publish := func(n int) chan error {
		done := make(chan error, 1)
		go func() { done <- bob.Publish(ctx, "rooms.xnode", numbered{P: 1, N: n}) }()
		return done
	}

	// 1. Accepted by node a and delivered; the reply is lost; the copy
	// goes to node b.
	p.swallow(false)
	done := publish(1)
	for _, s := range subs {
		var n numbered
		must(t, json.Unmarshal(next(t, s).Body, &n))
		if n != (numbered{P: 1, N: 1}) {
			t.Fatalf("delivered %+v", n)
		}
	}
	moveTo(b)
	p.setDown(true)
	p.setDown(false)
	if err := <-done; err != nil {
		t.Fatalf("accepted on node a, reply lost, copy to node b: %v", err)
	}
	if got := received(); len(got[0]) != 0 || len(got[1]) != 0 {
		t.Fatalf("delivered again: %v", got)
	}

	// 2. Never reaches node b; the connection comes back on node a.
	p.swallow(true)
	done = publish(2)
	sigiltest.Eventually(t, "the publish to be swallowed", func() bool { return p.swallowed() > 0 })
	moveTo(a)
	p.setDown(true)
	p.setDown(false)
	if err := <-done; err != nil {
		t.Fatalf("lost before node b, then sent again to node a: %v", err)
	}
	once("sent again after a loss", numbered{P: 1, N: 2})

	if bob.Stats().Reconnects != 2 {
		t.Fatalf("reconnects %d", bob.Stats().Reconnects)
	}
}
