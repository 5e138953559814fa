package server

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// keyCounter is a BrokerEventHandler that counts key publications.
type keyCounter struct{ n atomic.Int64 }

func (k *keyCounter) HandlePublication(p *Publication) {
	if p.Key != nil {
		k.n.Add(1)
	}
}

// A channel's key is one for every node: concurrent first requests on two
// nodes agree on one key, and concurrent rotations from one version make
// one new key, published once.
func TestRedisPresenceChannelKey(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	prefix := "test-" + uuid.NewString()[:8] + ":"
	var nodes [2]*Cluster
	for i := range nodes {
		c, err := NewCluster(ClusterConfig{Redis: RedisConfig{URL: srv.URL, Prefix: prefix, OpTimeout: 20 * time.Second}, Secret: sealSecret})
		noErr(t, err)
		t.Cleanup(c.Close)
		nodes[i] = c
	}
	keys := &keyCounter{}
	noErr(t, nodes[0].Broker.Start(keys))
	noErr(t, nodes[1].Broker.Start(&keyCounter{}))
	ctx := context.Background()
	noErr(t, nodes[0].Broker.Subscribe(ctx, ChannelTopic("rooms.k")))

	var wg sync.WaitGroup
	got := make([]*ChannelKey, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := nodes[i%2].Presence.ChannelKey(ctx, "rooms.k")
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = k
		}()
	}
	wg.Wait()
	for _, k := range got {
		if k == nil || k.Key.ID != got[0].Key.ID || k.Version != got[0].Version {
			t.Fatalf("the nodes made different keys: %v and %v", k, got[0])
		}
	}
	until := func(what string, cond func() bool) { t.Helper(); sigiltest.Eventually(t, what, cond) }
	until("the first key's publication", func() bool { return keys.n.Load() == 1 })

	from := got[0].Version
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nodes[i%2].Presence.RotateKey(ctx, "rooms.k", from); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	k, err := nodes[1].Presence.ChannelKey(ctx, "rooms.k")
	noErr(t, err)
	if k.Version <= from || k.Key.ID == got[0].Key.ID {
		t.Fatalf("not rotated: %v", k)
	}
	noErr(t, nodes[0].Presence.RotateKey(ctx, "rooms.k", from)) // too late: a no-op
	k2, err := nodes[0].Presence.ChannelKey(ctx, "rooms.k")
	noErr(t, err)
	if k2.Key.ID != k.Key.ID {
		t.Fatal("a rotation from an old version replaced the key")
	}
	until("the rotation's publication", func() bool { return keys.n.Load() >= 2 })
	// One more publication would have arrived by the time a fence does.
	noErr(t, nodes[1].Presence.RotateKey(ctx, "rooms.k", k.Version))
	until("the fence", func() bool { return keys.n.Load() >= 3 })
	if n := keys.n.Load(); n != 3 {
		t.Fatalf("%d key publications, want 3 (the first key, one rotation of six, the fence)", n)
	}
}
