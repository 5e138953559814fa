package server_test

import (
	"context"
	"log"

	"github.com/sigil-ws/sigil/server"
)

// Nodes that act as one server share their replay state, revocations and
// refresh families through one Redis connection each.
func ExampleNewRedis() {
	r, err := server.NewRedis(server.RedisConfig{
		URL:        "rediss://:password@redis.internal:6379", // never logged
		ClientName: "node-1",
	})
	if err != nil {
		log.Fatal(err) // a node does not start without its Redis
	}
	defer r.Close()
	revocations := server.NewRedisRevocationStore(r)
	cfg := server.Config{
		Replay:      server.NewRedisReplayStore(r, revocations), // one round trip per frame for both checks
		Revocations: revocations,
		Refresh:     server.NewRedisRefreshStore(r, 0), // 32 live families per subject
	}
	_ = cfg

	// Revocations made on any node arrive here; a Resync asks for every
	// live session to be checked again.
	err = revocations.Watch(context.Background(), func(ev server.RevocationEvent) {
		switch {
		case ev.Resync:
			log.Print("re-checking every live session")
		case ev.TokenID != "":
			log.Printf("token %s revoked", ev.TokenID)
		default:
			log.Printf("subject %s revoked up to %v", ev.Subject, ev.At)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
}
