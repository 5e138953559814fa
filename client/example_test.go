package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// exampleServer starts an in-process Sigil server on a loopback port with
// users alice and bob (password "pw") and an application action
// "greet.hello"; it returns the WebSocket URL and a stop function.
func exampleServer() (url string, stop func()) {
	policy, _ := protocol.NewPolicy(append(protocol.DefaultPolicy().Rules(),
		protocol.Rule{Action: "greet.hello", Roles: []string{"user"}}))
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: testUsers()},
		Policy:        policy,
		Logger:        sigiltest.QuietLogger(),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv.Handle("greet.hello", func(ctx context.Context, m *server.Message) (any, error) {
		var req struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(m.Body, &req); err != nil {
			return nil, err
		}
		return map[string]string{"greeting": "hello, " + req.Name + ", from " + m.Session.Subject}, nil
	})
	hs := httptest.NewServer(srv.Handler())
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
	}
}

// Dial logs in with a password, generates the session key, binds it to the
// session token and completes the handshake. Plain ws:// is accepted only
// because the server is on a loopback address.
func Example_dial() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()

	c, err := client.Dial(ctx, url, &client.Options{Tokens: client.Password("alice", "pw")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, sub := c.Session()
	fmt.Println(c.State(), "as", sub)
	// Output: connected as alice
}

// Publish signs the message with alice's session key; every subscriber
// verifies her signature end to end.
func Example_publish() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	alice, err := client.Dial(ctx, url, &client.Options{Tokens: client.Password("alice", "pw")})
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, url, &client.Options{Tokens: client.Password("bob", "pw")})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	sub, err := bob.Subscribe(ctx, "rooms.lobby")
	if err != nil {
		log.Fatal(err)
	}

	if err := alice.Publish(ctx, "rooms.lobby", map[string]string{"text": "hi bob"}); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s said %s in %s\n", m.From, m.Body, m.Channel)

	// A refusal carries the protocol's error code.
	err = alice.Publish(ctx, "announce.news", map[string]string{"text": "x"})
	fmt.Println(protocol.CodeOf(err))
	// Output:
	// alice said {"text":"hi bob"} in rooms.lobby
	// forbidden
}

func ExampleClient_Subscribe() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, url, &client.Options{Tokens: client.Password("alice", "pw")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "rooms.lobby")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for i := 1; i <= 3; i++ {
		if err := c.Publish(ctx, "rooms.lobby", map[string]int{"n": i}); err != nil {
			log.Fatal(err)
		}
	}
	for range 3 {
		m := <-sub.C()
		var body struct{ N int }
		if err := m.Decode(&body); err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.From, body.N)
	}
	// Output:
	// alice 1
	// alice 2
	// alice 3
}

func ExampleClient_Call() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, url, &client.Options{Tokens: client.Password("bob", "pw")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var resp struct {
		Greeting string `json:"greeting"`
	}
	if err := c.Call(ctx, "greet.hello", map[string]string{"name": "Ada"}, &resp); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Greeting)

	err = c.Call(ctx, "greet.missing", nil, nil)
	fmt.Println(protocol.CodeOf(err))
	// Output:
	// hello, Ada, from bob
	// forbidden
}
