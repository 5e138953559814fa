package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/sigil-ws/sigil/client"
)

// runListen implements "sigil listen [--json] CHANNEL": it prints every
// verified message of the channel — the sender (verified end to end), the
// time and the body — until interrupted.
func runListen(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("listen", "[flags] CHANNEL", `
Prints every message of CHANNEL, verified end to end (the sender's own
signature), until interrupted or --count messages; --json prints one
record per line with the server's signed delivery as evidence, for sigil
verify.`)
	file := fs.String("credentials", defaultCredentialsPath(), "credentials file written by sigil login")
	asJSON := fs.Bool("json", false, "print one JSON object per message")
	encrypt := fs.Bool("encrypt", false, "ask for body encryption (spec.md §11)")
	insecure := fs.Bool("insecure-plaintext", false, "allow ws:// to a non-loopback host")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *count < 0 {
		return badUsage(fs, "listen takes one CHANNEL and a --count of 0 or more")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, done, err := dialStored(dctx, *file, *encrypt, *insecure)
	if err != nil {
		cancel()
		return err
	}
	defer done()
	sub, err := c.Subscribe(dctx, fs.Arg(0))
	cancel()
	if err != nil {
		return err
	}
	// Scripts wait for this line before they send (stdout has only messages).
	fmt.Fprintf(os.Stderr, "sigil: listening to %s as %s (Ctrl-C to stop)\n", fs.Arg(0), c.Token().Subject)
	enc := json.NewEncoder(stdout)
	for n := 0; *count == 0 || n < *count; n++ {
		m, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return loginHint(err)
		}
		if *asJSON {
			if err := enc.Encode(listenRecord(m)); err != nil {
				return err
			}
			continue
		}
		body := string(m.Body)
		var t struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(m.Body, &t) == nil && t.Text != "" {
			body = t.Text
		}
		if m.Body == nil {
			body = "(encrypted; run with --encrypt to read)"
		}
		fmt.Fprintf(stdout, "%s %s: %s\n", m.Time.Local().Format(time.DateTime), m.From, body)
	}
	return nil
}

type listenJSON struct {
	Channel   string          `json:"channel"`
	From      string          `json:"from"`
	Server    bool            `json:"server,omitempty"`
	ID        string          `json:"id"`
	Time      time.Time       `json:"time"`
	Body      json.RawMessage `json:"body,omitempty"`
	Encrypted bool            `json:"encrypted,omitempty"`
	Verified  bool            `json:"verified"`
	// Evidence is the server's signed delivery frame: `sigil verify`
	// checks it offline against the server's JWKS (spec.md §14).
	Evidence string `json:"evidence"`
}

func listenRecord(m *client.Message) listenJSON {
	return listenJSON{Channel: m.Channel, From: m.From, Server: m.FromServer, ID: m.ID, Time: m.Time.UTC(),
		Body: m.Body, Encrypted: m.Encrypted, Verified: true, Evidence: string(m.Delivery)}
}
