package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// Mount the server's handlers in an existing mux, next to the
// application's own routes, and answer an application action from Go.
func Example() {
	users := &server.UsersDoc{}
	hash, _ := server.HashPassword("correct horse battery staple", "bcrypt")
	users.Users = append(users.Users, server.User{Name: "alice", Hash: hash, Roles: []string{"user"}})

	srv, err := server.New(server.Config{
		Authenticator: server.Authenticators{Password: server.StaticUsers{Doc: users}},
		Logger:        sigiltest.QuietLogger(),
	})
	if err != nil {
		panic(err)
	}
	srv.Handle("orders.create", func(ctx context.Context, m *server.Message) (any, error) {
		return map[string]string{"status": "created", "by": m.Session.Subject}, nil
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "my app") })
	srv.Mount(mux) // /v1/token, /v1/refresh, /v1/ws, /.well-known/jwks.json, /v1/admin/, /healthz, /readyz, /metrics

	hs := httptest.NewServer(mux)
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/.well-known/jwks.json")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))

	// Push to a channel from Go code.
	_ = srv.Publish(context.Background(), "rooms.lobby", map[string]string{"motd": "hello"})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println(srv.Shutdown(ctx))
	_ = protocol.Subprotocol
	// Output:
	// 200 application/jwk-set+json
	// <nil>
}
