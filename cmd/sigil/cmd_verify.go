package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// runVerify checks archived messages offline (spec.md §14): deliveries, as
// `sigil listen --json` records them, or a client frame with its session
// token and session key. Nothing but the server's JWKS is trusted.
func runVerify(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	jwksArg := fs.String("jwks", "", "the server's JWKS: a file, or the server's https:// URL (http:// only to loopback)")
	tokenFile := fs.String("token", "", "client frame mode: a file holding the session token")
	keyFile := fs.String("key", "", "client frame mode: a file holding the session public JWK")
	asJSON := fs.Bool("json", false, "print one JSON object per verified message")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sigil verify --jwks FILE|URL [--json] [FILE]
       sigil verify --jwks FILE|URL --token TOKEN-FILE --key JWK-FILE [--json] [FILE]

Verifies archived messages offline against the server's JWKS (spec.md §14).
FILE (default stdin) holds compact frames or "sigil listen --json" records,
one per line. Without --token, each is a deliver or direct frame: the
server's signature, then the sender's own frame inside it; a record's plain
from, channel, id, time and body must say what its evidence says. With
--token and --key, each is a client frame, checked against the token's
subject and key. Exits 1 if any message fails.
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *jwksArg == "" || fs.NArg() > 1 || (*tokenFile == "") != (*keyFile == "") {
		return badUsage(fs, "verify needs --jwks and at most one FILE; --token and --key go together")
	}
	keys, err := loadJWKS(ctx, *jwksArg)
	if err != nil {
		return err
	}
	var token string
	var jwk []byte
	if *tokenFile != "" {
		t, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fileError("--token", *tokenFile, nil, err)
		}
		token = strings.TrimSpace(string(t))
		if jwk, err = os.ReadFile(*keyFile); err != nil {
			return fileError("--key", *keyFile, nil, err)
		}
	}
	in := stdin
	if fs.NArg() == 1 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 4*protocol.DefaultMaxFrame*16)
	enc := json.NewEncoder(stdout)
	line, ok, failed := 0, 0, 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		frame := text
		var rec *listenJSON
		if text[0] == '{' {
			rec = &listenJSON{}
			if err := json.Unmarshal(text, rec); err != nil || rec.Evidence == "" {
				fmt.Fprintf(stdout, "FAIL line %d: not a frame nor a listen --json record with evidence\n", line)
				failed++
				continue
			}
			frame = []byte(rec.Evidence)
		}
		var ev *protocol.Evidence
		if token != "" {
			ev, err = protocol.VerifyEvidence(keys, token, jwk, frame)
		} else {
			ev, err = protocol.VerifyDeliveryEvidence(keys, frame)
		}
		if err != nil {
			fmt.Fprintf(stdout, "FAIL line %d: %s: %v\n", line, protocol.CodeOf(err), err)
			failed++
			continue
		}
		if rec != nil {
			// The record's plain fields are what a reader of the archive
			// sees: each must say what the signed evidence says.
			if what := recordMismatch(rec, ev); what != "" {
				fmt.Fprintf(stdout, "FAIL line %d: the record's %s differs from the signed evidence\n", line, what)
				failed++
				continue
			}
		}
		ok++
		m := ev.Message
		if *asJSON {
			if err := enc.Encode(verifyRecord(ev)); err != nil {
				return err
			}
			continue
		}
		what := m.Action + " " + m.Channel
		if m.Action == protocol.ActDM {
			what = "dm to " + m.To
		}
		body := string(m.Body)
		if m.Enc != "" {
			body = "(encrypted body; its ciphertext is what was signed)"
		}
		fmt.Fprintf(stdout, "ok   line %d: %s signed %s at %s (id %s, key %s): %s\n", line, ev.Subject, what,
			m.Time().UTC().Format(time.RFC3339Nano), m.ID, ev.Key.Thumbprint(), body)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "%d verified, %d failed\n", ok, failed)
	}
	if failed > 0 || ok == 0 {
		return fmt.Errorf("verify: %d of %d messages failed", failed, ok+failed)
	}
	return nil
}

// recordMismatch names the first field of a listen --json record that
// does not match its verified evidence, or returns "". An encrypted body
// cannot be compared offline (no keys): its record says so with
// "encrypted", and its plain body is not vouched for.
func recordMismatch(rec *listenJSON, ev *protocol.Evidence) string {
	m := ev.Message
	switch {
	case rec.From != ev.Subject || rec.Server != ev.FromServer:
		return "from"
	case rec.Channel != m.Channel:
		return "channel"
	case rec.To != m.To:
		return "to"
	case rec.ID != m.ID:
		return "id"
	case !rec.Time.Equal(m.Time()):
		return "time"
	case rec.Encrypted != (m.Enc != ""):
		return "encrypted"
	case m.Enc == "" && !sameJSON(rec.Body, m.Body):
		return "body"
	}
	return ""
}

// sameJSON compares two JSON texts ignoring insignificant white space.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

type verifyJSON struct {
	From       string          `json:"from"`
	FromServer bool            `json:"server,omitempty"`
	Key        string          `json:"key"` // RFC 7638 thumbprint of the signing key
	Action     string          `json:"act"`
	Channel    string          `json:"channel,omitempty"`
	To         string          `json:"to,omitempty"`
	ID         string          `json:"id"`
	Time       time.Time       `json:"time"`
	Session    string          `json:"sid,omitempty"`
	Seq        uint64          `json:"seq,omitempty"`
	Body       json.RawMessage `json:"body,omitempty"`
	Encrypted  bool            `json:"encrypted,omitempty"`
}

func verifyRecord(ev *protocol.Evidence) verifyJSON {
	m := ev.Message
	return verifyJSON{From: ev.Subject, FromServer: ev.FromServer, Key: ev.Key.Thumbprint(), Action: m.Action,
		Channel: m.Channel, To: m.To, ID: m.ID, Time: m.Time().UTC(), Session: m.Session, Seq: m.Seq,
		Body: m.Body, Encrypted: m.Enc != ""}
}

// loadJWKS reads a JWKS from a file, or fetches it from a server URL
// (its /.well-known/jwks.json) over TLS, plain http only to loopback.
func loadJWKS(ctx context.Context, arg string) (*protocol.KeySet, error) {
	var data []byte
	if strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://") {
		_, base, err := clientEndpoints(arg, false)
		if err != nil {
			return nil, err
		}
		u := arg
		if !strings.HasSuffix(u, "/.well-known/jwks.json") {
			u = base + "/.well-known/jwks.json"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := cliHTTPClient().Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		if data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return nil, err
		}
	} else {
		var err error
		if data, err = os.ReadFile(arg); err != nil {
			return nil, fileError("--jwks", arg, nil, err)
		}
	}
	keys, err := protocol.ParseKeySet(data)
	if err != nil {
		return nil, fileError("--jwks", arg, data, err)
	}
	return keys, nil
}
