package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// The broker contract (broker_test.go) holds for the Redis broker on one
// redis-server and on a three-node Redis Cluster (sharded pub/sub, the
// partitions spread over the shards).
func TestRedisBrokerContract(t *testing.T) {
	brokerContract(t, newCluster(t, sigiltest.StartRedis(t).URL, "test:", nil).Broker)
}

func TestRedisBrokerContractOnCluster(t *testing.T) {
	rc := sigiltest.StartRedisCluster(t, 3)
	brokerContract(t, newCluster(t, rc.URL, "test-"+uuid.NewString()[:8]+":", nil).Broker)
}

// Without Redis the broker fails closed and the node says it is not
// ready; when Redis is back, the broker subscribes again by itself and
// the node is ready again, with nothing re-created.
func TestRedisBrokerFailsClosedAndRecovers(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	c := newCluster(t, srv.URL, "test:", func(cc *server.ClusterConfig) { cc.Heartbeat = 100 * time.Millisecond })
	r := newRecorder()
	must(t, c.Broker.Start(r))
	must(t, c.Presence.Start(c.Broker, func(act, ch, sub string) (*server.Publication, error) {
		return &server.Publication{Channel: &server.ChannelPublication{Channel: ch, Frame: []byte(act + " " + sub)}}, nil
	}))
	ctx := context.Background()
	must(t, c.Ready(ctx))
	lobby := server.ChannelTopic("rooms.lobby")
	must(t, c.Broker.Subscribe(ctx, lobby))
	pub := func(i int) *server.Publication {
		return &server.Publication{Channel: &server.ChannelPublication{Channel: "rooms.lobby", Frame: []byte(fmt.Sprint(i))}}
	}

	srv.Stop()
	if err := c.Broker.Publish(ctx, pub(1)); !errors.Is(err, server.ErrRedisUnavailable) {
		t.Fatalf("Publish without Redis: %v", err)
	}
	until(t, "the node to be not ready", func() bool { return c.Ready(ctx) != nil })
	if err := c.Broker.Subscribe(ctx, server.ChannelTopic("rooms.other")); !errors.Is(err, server.ErrRedisUnavailable) {
		t.Fatalf("Subscribe without Redis: %v", err)
	}

	srv.Restart()
	until(t, "the node to be ready again", func() bool { return c.Ready(ctx) == nil })
	// Ready says Redis answers; a pipelined connection that broke with the
	// restart may still fail one publish, which must fail closed (an
	// error, never a silent success). Publish until one is accepted: that
	// one must be delivered (lobby was subscribed again).
	accepted := 0
	until(t, "a publish to be accepted again", func() bool {
		next := accepted + 2
		err := c.Broker.Publish(ctx, pub(next))
		if err != nil && !errors.Is(err, server.ErrRedisUnavailable) {
			t.Fatalf("publish after the restart: %v", err)
		}
		if err == nil {
			accepted = next
			return true
		}
		accepted++
		return false
	})
	want := fmt.Sprint(accepted)
	for n := 1; ; n++ {
		got := r.wait(t, n)
		if string(got[n-1].Channel.Frame) == want {
			break
		}
	}
	must(t, c.Broker.Subscribe(ctx, server.ChannelTopic("rooms.other")))
}
