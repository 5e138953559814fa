package server_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/sigil-ws/sigil/server"
)

// A node of a server that runs on several nodes: one Redis for all of
// them, the same signing keys, and the same cluster secret.
func ExampleNewCluster() {
	secret, err := os.ReadFile("/etc/sigil/cluster-secret") // ≥ 32 random bytes, the same on every node
	if err != nil {
		log.Fatal(err)
	}
	cl, err := server.NewCluster(server.ClusterConfig{
		Redis:  server.RedisConfig{URL: "rediss://:password@redis.internal:6379"}, // never logged
		Node:   "node-1",
		Secret: secret,
	})
	if err != nil {
		log.Fatal(err) // a node does not start without its Redis
	}
	cfg := server.Config{ /* Keys: the signing keys every node shares, ... */ }
	cl.Configure(&cfg)
	srv, err := server.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{Addr: ":8080", Handler: srv.Handler()}
	go func() { _ = hs.ListenAndServe() }()

	// ... and on the way out: drain the sessions, then leave the cluster.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	_ = hs.Shutdown(ctx)
	cl.Close()
}
