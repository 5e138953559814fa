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

// inboxArg is the argument of listen that names the user's own inbox
// rather than a channel: "@", as the policy's inbox pattern (spec.md
// §20.11); no channel name holds "@".
const inboxArg = protocol.InboxPattern

// runListen implements "sigil listen [--json] [--since FILE] CHANNEL|@": it
// prints every verified message of the channel, or with "@" every direct
// message to the user (the sender, verified end to end, the time and the
// body) until interrupted. With --since, it resumes after the
// position saved in FILE (spec.md §20; for "@" the inbox's, §20.11), if
// any, and saves the position of each message it printed there. What
// could not be recovered is reported on stderr.
func runListen(ctx context.Context, args []string, stdout io.Writer) error {
	return listen(ctx, args, stdout, os.Stderr)
}

// listen is runListen with its stderr.
func listen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("listen", "[flags] CHANNEL\n[flags] @", `
Prints every message of CHANNEL, verified end to end (the sender's own
signature), until interrupted or --count messages; with @ instead of a
channel, every direct message sent to you. --json prints one record per
line with the server's signed delivery as evidence, for sigil verify.
--since FILE keeps the position of the last message printed in FILE
(one file per channel, and one for @) and resumes after it: messages
sent meanwhile come first, in order, once; those the server no longer
has are reported on stderr.`)
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
		return badUsage(fs, "listen takes one CHANNEL (or @ for your direct messages) and a --count of 0 or more")
	}
	inbox := fs.Arg(0) == inboxArg
	what := fs.Arg(0)
	if inbox {
		what = "your direct messages"
	}
	gap := func(g client.Gap) {
		fmt.Fprintf(stderr, "sigil listen: %s: messages between %v and %v could not be recovered\n", what, g.From, g.To)
	}
	var pos client.Position
	if *since != "" {
		var err error
		if pos, err = readPosition(*since); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
	}
	var set []func(*client.Options)
	if inbox {
		// With InboxSince, Dial opens the inbox itself (no OnGap then):
		// its gap comes to OnError.
		set = append(set, func(o *client.Options) {
			if !pos.IsZero() {
				o.InboxSince = &pos
			}
			o.OnError = func(err error) {
				if ge := (*client.GapError)(nil); errors.As(err, &ge) {
					gap(ge.Gap)
				}
			}
		})
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, done, err := dialStored(dctx, *file, *encrypt, *insecure, set...)
	if err != nil {
		cancel()
		return err
	}
	defer done()
	var sub *client.Subscription
	if inbox {
		sub = c.Inbox(client.OnGap(gap))
	} else {
		opts := []client.SubscribeOption{client.OnGap(gap)}
		if !pos.IsZero() {
			opts = append(opts, client.Since(pos))
		}
		sub, err = c.Subscribe(dctx, fs.Arg(0), opts...)
	}
	cancel()
	if err != nil {
		return err
	}
	// Scripts wait for this line before they send (stdout has only messages).
	fmt.Fprintf(stderr, "sigil: listening to %s as %s (Ctrl-C to stop)\n", what, c.Token().Subject)
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
	Channel   string          `json:"channel,omitempty"` // a publication's
	To        string          `json:"to,omitempty"`      // a direct message's recipient
	From      string          `json:"from"`
	Server    bool            `json:"server,omitempty"`
	ID        string          `json:"id"`
	Time      time.Time       `json:"time"`
	Body      json.RawMessage `json:"body,omitempty"`
	Encrypted bool            `json:"encrypted,omitempty"`
	Verified  bool            `json:"verified"`
	// Position is the message's place in the channel's stream, for a
	// channel with history (spec.md §20), or in the user's inbox for a
	// stored direct message (§20.11).
	Position *client.Position `json:"position,omitempty"`
	// LogIndex is the message's entry in the server's audit log, when the
	// log is synchronous (spec.md §21.3): sigil audit prove --index.
	LogIndex *uint64 `json:"log_index,omitempty"`
	// Evidence is the server's signed delivery frame: `sigil verify`
	// checks it offline against the server's JWKS (spec.md §14).
	Evidence string `json:"evidence"`
}

func listenRecord(m *client.Message) listenJSON {
	r := listenJSON{Channel: m.Channel, To: m.To, From: m.From, Server: m.FromServer, ID: m.ID, Time: m.Time.UTC(),
		Body: m.Body, Encrypted: m.Encrypted, Verified: true, Evidence: string(m.Delivery)}
	if p := m.Position(); !p.IsZero() {
		r.Position = &p
	}
	if i, ok := m.LogIndex(); ok {
		r.LogIndex = &i
	}
	return r
}
