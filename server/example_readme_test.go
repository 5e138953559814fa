package server_test

import (
	"log"
	"net/http"
	"os"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// The README's server snippet: a server with a users file, on one
// http.Handler. The lines between the markers are README.md's, word for
// word (cmd/sigil's TestREADMEGoSnippets checks it).
func Example_readmeServe() {
	data, err := os.ReadFile("sigil-data/keys/0001.jwk")
	if err != nil {
		log.Fatal(err)
	}
	key, err := protocol.ParsePrivateJWK(data)
	if err != nil {
		log.Fatal(err)
	}
	// README begin
	users, err := server.NewUsersFile("sigil-data/users.json")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Keys:          []*protocol.PrivateKey{key},
		Authenticator: server.Authenticators{Password: users},
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", srv.Handler()))
	// README end
}

// The README's cluster snippet (see ExampleNewCluster for a whole node).
func Example_readmeCluster() {
	secret, err := os.ReadFile("/etc/sigil/cluster-secret")
	if err != nil {
		log.Fatal(err)
	}
	var keys []*protocol.PrivateKey // the server's signing keys
	// README begin
	cl, err := server.NewCluster(server.ClusterConfig{
		Redis:  server.RedisConfig{URL: "rediss://:password@redis.internal:6379"},
		Node:   "node-1",
		Secret: secret, // ≥ 32 random bytes, the same on every node, kept like the signing keys
	})
	if err != nil {
		log.Fatal(err) // a node does not start without its Redis
	}
	defer cl.Close()                 // after srv.Shutdown
	cfg := server.Config{Keys: keys} // the same signing keys on every node
	cl.Configure(&cfg)
	srv, err := server.New(cfg)
	// README end
	if err != nil {
		log.Fatal(err)
	}
	_ = srv
}
