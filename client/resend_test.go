package client_test

import (
	"encoding/json"
	"errors"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"strings"
	"sync"
	"testing"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/server"
)

// TestPublishExactlyOnceAcrossCuts cuts the publisher's connection at
// each point of a publish: Publish returns nil exactly when the
// subscriber got the message, once; a frame that never reached the
// server is sent again, as a new frame, and delivered once.
func TestPublishExactlyOnceAcrossCuts(t *testing.T) {
	e := newEnv(t, nil)
	p := newCutProxy(t, strings.TrimPrefix(strings.TrimSuffix(e.url, "/v1/ws"), "ws://"))
	ctx := ctxT(t)
	alice := e.dial("alice", nil)
	s, err := alice.Subscribe(ctx, "rooms.once")
	must(t, err)
	bob := e.dialVia(p, "bob", nil)

	// marker publishes a marker and returns the bodies alice received
	// before it.
	n := 0
	marker := func() []numbered {
		n++
		must(t, alice.Publish(ctx, "rooms.once", numbered{P: 9, N: n}))
		var got []numbered
		for {
			var b numbered
			must(t, json.Unmarshal(next(t, s).Body, &b))
			if b.P == 9 && b.N == n {
				return got
			}
			got = append(got, b)
		}
	}
	publish := func(i int) chan error {
		done := make(chan error, 1)
		go func() { done <- bob.Publish(ctx, "rooms.once", numbered{P: 1, N: i}) }()
		return done
	}

	// 1. The frame never reaches the server.
	p.swallow(true)
	done := publish(1)
	sigiltest.Eventually(t, "the publish to be swallowed", func() bool { return p.swallowed() > 0 })
	p.setDown(true)
	p.setDown(false)
	if err := <-done; err != nil {
		t.Fatalf("lost before the server, then sent again: %v", err)
	}
	if got := marker(); len(got) != 1 || got[0] != (numbered{P: 1, N: 1}) {
		t.Fatalf("lost before the server, then sent again: delivered %v", got)
	}

	// 2. Accepted and delivered; the reply is lost.
	p.swallow(false)
	done = publish(2)
	var first numbered
	must(t, json.Unmarshal(next(t, s).Body, &first))
	if first != (numbered{P: 1, N: 2}) {
		t.Fatalf("delivered %+v", first)
	}
	p.setDown(true)
	p.setDown(false)
	if err := <-done; err != nil {
		t.Fatalf("accepted, reply lost: %v", err)
	}
	if got := marker(); len(got) != 0 {
		t.Fatalf("delivered again: %v", got)
	}

	// 3. No cut: the plain path still answers.
	must(t, <-publish(3))
	if got := marker(); len(got) != 1 || got[0].N != 3 {
		t.Fatalf("plain publish: %v", got)
	}
	if bob.Stats().Reconnects != 2 {
		t.Fatalf("reconnects %d", bob.Stats().Reconnects)
	}
}

// TestPublishExactlyOnceAcrossShutdown publishes continuously while the
// server shuts down and starts again: no message reaches the subscriber
// twice; one whose Publish returned ErrNotAccepted never reaches it; one
// whose Publish returned nil reaches it, unless the subscriber was told
// of a gap (the in-memory history ends with the server).
func TestPublishExactlyOnceAcrossShutdown(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = historyPolicy(t, 1000) })
	ctx := ctxT(t)
	var gapped sync.Mutex
	gap := false
	alice := e.dial("alice", nil)
	s, err := alice.Subscribe(ctx, "rooms.down", client.OnGap(func(client.Gap) { gapped.Lock(); gap = true; gapped.Unlock() }))
	must(t, err)
	bob := e.dial("bob", nil)
	const total = 60
	results := make([]error, total)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range total {
			results[i] = bob.Publish(ctx, "rooms.down", numbered{P: 1, N: i})
		}
	}()
	got := map[int]int{}
	for len(got) < 10 {
		var b numbered
		must(t, json.Unmarshal(next(t, s).Body, &b))
		got[b.N]++
	}
	e.restart()
	wg.Wait()
	must(t, bob.Publish(ctx, "rooms.down", numbered{P: 9}))
	for {
		var b numbered
		must(t, json.Unmarshal(next(t, s).Body, &b))
		if b.P == 9 {
			break
		}
		got[b.N]++
	}
	gapped.Lock()
	defer gapped.Unlock()
	for i, err := range results {
		switch {
		case got[i] > 1:
			t.Fatalf("message %d delivered %d times", i, got[i])
		case err == nil && got[i] == 0 && !gap:
			t.Fatalf("message %d accepted, not delivered, and no gap reported", i)
		case errors.Is(err, client.ErrNotAccepted) && got[i] != 0:
			t.Fatalf("message %d delivered though not accepted", i)
		case err != nil && !errors.Is(err, client.ErrNotAccepted) && !errors.Is(err, client.ErrConnectionLost):
			t.Fatalf("message %d: %v", i, err)
		}
	}
}
