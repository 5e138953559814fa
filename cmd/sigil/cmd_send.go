package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// runSend implements "sigil send CHANNEL MESSAGE" and "sigil send --stdin
// CHANNEL" (one message per non-empty line). Each message is published as
// {"text": MESSAGE}, signed by the stored session's key; to @USER, it is
// a direct message to USER (spec.md §9.5), as "sigil listen @" reads them.
func runSend(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("send", "[flags] CHANNEL|@USER MESSAGE\n--stdin [flags] CHANNEL|@USER", `
Publishes MESSAGE to CHANNEL as {"text": MESSAGE}, signed by a session of
its own minted from the login of sigil login; with --stdin, every
non-empty line of stdin, one message each. To @USER, each message is a
direct message to USER instead (sigil listen @ reads yours).`)
	file := fs.String("credentials", defaultCredentialsPath(), "credentials file written by sigil login")
	fromStdin := fs.Bool("stdin", false, "send every non-empty line of stdin as a message")
	encrypt := fs.Bool("encrypt", false, "seal bodies (spec.md §11)")
	insecure := fs.Bool("insecure-plaintext", false, "allow ws:// to a non-loopback host")
	timeout := fs.Duration("timeout", 30*time.Second, "overall timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*fromStdin && fs.NArg() != 1) || (!*fromStdin && fs.NArg() != 2) {
		return badUsage(fs, "send takes CHANNEL MESSAGE, or CHANNEL with --stdin; got %d arguments", fs.NArg())
	}
	channel := fs.Arg(0)
	to, direct := strings.CutPrefix(channel, "@")
	if direct && to == "" {
		return badUsage(fs, "send @USER: the user is missing after @")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, done, err := dialStored(ctx, *file, *encrypt, *insecure)
	if err != nil {
		return err
	}
	defer done()
	if *encrypt && !direct {
		// The channel key comes with a subscription.
		sub, err := c.Subscribe(ctx, channel)
		if err != nil {
			return err
		}
		defer sub.Close()
	}
	send := func(text string) error {
		body := map[string]string{"text": text}
		if direct {
			return loginHint(c.Send(ctx, to, body))
		}
		return loginHint(c.Publish(ctx, channel, body))
	}
	if !*fromStdin {
		return send(fs.Arg(1))
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 60<<10)
	n := 0
	for sc.Scan() {
		if sc.Text() == "" {
			continue
		}
		if err := send(sc.Text()); err != nil {
			return fmt.Errorf("message %d: %w", n+1, err)
		}
		n++
	}
	return sc.Err()
}
