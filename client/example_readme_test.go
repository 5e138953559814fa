package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/sigil-ws/sigil/client"
)

// Quote and QuoteRequest are an application's request/reply types.
type (
	QuoteRequest struct {
		Item string `json:"item"`
	}
	Quote struct {
		Price int `json:"price"`
	}
)

// The README's "Using it from Go": dial, subscribe, publish, receive a
// verified message, and call an application action. The lines between the
// markers are README.md's snippet, word for word (cmd/sigil's
// TestREADMEGoSnippets checks it), so the README compiles.
func Example_readme() {
	ctx := context.Background()
	password := os.Getenv("SIGIL_PASSWORD")
	// README begin
	c, err := client.Dial(ctx, "wss://chat.example/v1/ws", &client.Options{
		Tokens: client.Password("alice", password),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "rooms.lobby")
	if err != nil {
		log.Fatal(err)
	}
	_ = c.Publish(ctx, "rooms.lobby", map[string]string{"text": "hi"})
	if m, err := sub.Next(ctx); err == nil { // verified end to end: m.From is the signer
		fmt.Printf("%s: %s\n", m.From, m.Body)
	}
	var quote Quote
	err = c.Call(ctx, "orders.quote", QuoteRequest{Item: "book"}, &quote) // a *protocol.Error on refusal: errors.As / protocol.CodeOf
	// README end
	if err != nil {
		log.Fatal(err)
	}
}
