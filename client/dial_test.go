package client_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// TestDialURLForms: Dial takes the server's base or its WebSocket endpoint
// in every scheme — ws://host and http://host, with or without /v1/ws or a
// trailing slash — and each connects and publishes over a real socket.
// ws://host without /v1/ws used to fail with a bad handshake (404).
func TestDialURLForms(t *testing.T) {
	e := newEnv(t, nil)
	host := strings.TrimSuffix(strings.TrimPrefix(e.url, "ws://"), "/v1/ws")
	for _, u := range []string{
		"ws://" + host, "ws://" + host + "/", "ws://" + host + "/v1/ws", "ws://" + host + "/v1/ws/",
		"http://" + host, "http://" + host + "/", "http://" + host + "/v1/ws",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), sigiltest.WaitLimit) // a safety limit, not the assertion
		c, err := client.Dial(ctx, u, &client.Options{Tokens: client.Password("alice", "pw")})
		if err != nil {
			cancel()
			t.Fatalf("Dial(%s): %v", u, err)
		}
		sub, err := c.Subscribe(ctx, "rooms.dial")
		if err == nil {
			err = c.Publish(ctx, "rooms.dial", map[string]string{"text": u})
		}
		if err == nil {
			_, err = sub.Next(ctx)
		}
		c.Close()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"ws:///v1/ws", "ftp://" + host, "ws://" + host + "/v1/ws?token=x"} {
		if _, err := client.Dial(context.Background(), u, &client.Options{Tokens: client.Password("alice", "pw")}); err == nil {
			t.Fatalf("Dial(%s) succeeded", u)
		}
	}
}
