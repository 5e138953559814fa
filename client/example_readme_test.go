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

// process is what an application does with a message.
func process(m *client.Message) { fmt.Printf("%s: %s\n", m.From, m.Body) }

// The README's "History and recovery": resume a saved position, hear of
// gaps, keep the position, and page the history. The lines between the
// markers are README.md's snippet, word for word.
func Example_readmeHistory() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "wss://chat.example/v1/ws", &client.Options{
		Tokens: client.Password("alice", os.Getenv("SIGIL_PASSWORD")),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var saved client.Position // read from where the last run kept it
	// README begin
	sub, err := c.Subscribe(ctx, "rooms.lobby",
		client.Since(saved), // optional: resume a position saved by an earlier process
		client.OnGap(func(g client.Gap) { // what could not be recovered: resync, or page with c.History
			log.Printf("gap in %s between %v and %v", g.Channel, g.From, g.To)
		}))
	if err != nil {
		log.Fatal(err)
	}
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			break // the client closed
		}
		process(m)
		saved = m.Position() // {Epoch, Offset}: persist it after processing
	}
	page, err := c.History(ctx, "rooms.lobby", client.HistoryQuery{Limit: 50}) // the last 50, verified
	// README end
	if err == nil {
		fmt.Println(len(page.Messages))
	}
}
