package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
)

// runListen implements "sigil listen [--json] [--since FILE] CHANNEL": it
// prints every verified message of the channel — the sender (verified end
// to end), the time and the body — until interrupted. With --since, it
// resumes after the position saved in FILE (spec.md §20), if any, and
// saves the position of each message it printed there.
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
	since := fs.String("since", "", "position file: resume after the position it holds, and keep it up to date")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *count < 0 {
		return badUsage(fs, "listen takes one CHANNEL and a --count of 0 or more")
	}
	opts := []client.SubscribeOption{client.OnGap(func(g client.Gap) {
		fmt.Fprintf(os.Stderr, "sigil listen: %s: messages between %v and %v could not be recovered\n", g.Channel, g.From, g.To)
	})}
	if *since != "" {
		pos, err := readPosition(*since)
		if err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		if !pos.IsZero() {
			opts = append(opts, client.Since(pos))
		}
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
	sub, err := c.Subscribe(dctx, fs.Arg(0), opts...)
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
			if err := savePosition(*since, m); err != nil {
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
		if err := savePosition(*since, m); err != nil {
			return err
		}
	}
	return nil
}

// savePosition records m's position in file (none: nothing to do), once m
// was printed.
func savePosition(file string, m *client.Message) error {
	if file == "" || m.Position().IsZero() {
		return nil
	}
	return writePosition(file, m.Position())
}

// readPosition reads a position file: {"epoch","offset"}; a missing or
// empty file is no position.
func readPosition(file string) (client.Position, error) {
	var p client.Position
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(data) == 0) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if err := protocol.DecodeBody(data, &p); err != nil || !protocol.ValidEpoch(p.Epoch) {
		return p, fmt.Errorf("sigil listen: %s is not a position file", file)
	}
	return p, nil
}

// writePosition replaces the position file atomically (a new file renamed
// over the old).
func writePosition(file string, p client.Position) error {
	data, _ := json.Marshal(p)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
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
	// Position is the message's place in the channel's stream, for a
	// channel with history (spec.md §20).
	Position *client.Position `json:"position,omitempty"`
	// LogIndex is the message's entry in the server's audit log, when the
	// log is synchronous (spec.md §21.3): sigil audit prove --index.
	LogIndex *uint64 `json:"log_index,omitempty"`
	// Evidence is the server's signed delivery frame: `sigil verify`
	// checks it offline against the server's JWKS (spec.md §14).
	Evidence string `json:"evidence"`
}

func listenRecord(m *client.Message) listenJSON {
	r := listenJSON{Channel: m.Channel, From: m.From, Server: m.FromServer, ID: m.ID, Time: m.Time.UTC(),
		Body: m.Body, Encrypted: m.Encrypted, Verified: true, Evidence: string(m.Delivery)}
	if p := m.Position(); !p.IsZero() {
		r.Position = &p
	}
	if i, ok := m.LogIndex(); ok {
		r.LogIndex = &i
	}
	return r
}
