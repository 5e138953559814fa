package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
)

// credentials is the file sigil login writes and send/listen use: enough to
// renew the session over /v1/refresh without the password. It holds the
// session's private key and refresh token: it is written with mode 0600.
type credentials struct {
	Server        string          `json:"server"`        // WebSocket URL
	Session       string          `json:"sid"`           // session id
	Subject       string          `json:"sub"`           // user
	Roles         []string        `json:"roles"`         // roles at login
	Key           json.RawMessage `json:"key"`           // private session JWK (secret)
	RefreshToken  string          `json:"refresh_token"` // single-use, rotated on every use (secret)
	RefreshExpiry int64           `json:"refresh_expires_at,omitempty"`
	Seq           uint64          `json:"seq"` // last seq used by the session
}

func defaultCredentialsPath() string {
	if p := os.Getenv("SIGIL_CREDENTIALS"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "sigil", "credentials.json")
}

// runLogin implements "sigil login --server URL --user NAME" (password on
// stdin): it obtains a session and stores its refresh token and key.
func runLogin(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	server := fs.String("server", os.Getenv("SIGIL_SERVER"), "server URL (wss://host/v1/ws or https://host); env SIGIL_SERVER")
	user := fs.String("user", "", "user name")
	file := fs.String("credentials", defaultCredentialsPath(), "credentials file (written with mode 0600); env SIGIL_CREDENTIALS")
	alg := fs.String("alg", "EdDSA", "session key algorithm: EdDSA or ES256")
	insecure := fs.Bool("insecure-plaintext", false, "allow ws:// or http:// to a non-loopback host (spec.md §2.3 forbids it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" || *user == "" || fs.NArg() != 0 {
		return errors.New("usage: sigil login --server URL --user NAME   (password on stdin)")
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return fmt.Errorf("reading the password from stdin: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	var a jose.SignatureAlgorithm
	switch *alg {
	case "EdDSA":
		a = protocol.EdDSA
	case "ES256":
		a = protocol.ES256
	default:
		return fmt.Errorf("--alg %q: want EdDSA or ES256", *alg)
	}
	wsURL, base, err := clientEndpoints(*server, *insecure)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := client.Password(*user, password).Token(ctx, &client.TokenRequest{BaseURL: base, HTTPClient: cliHTTPClient(), Algorithm: a})
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if err := saveCredentials(*file, wsURL, *tok); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "logged in as %s (session %s); credentials in %s\n", tok.Subject, tok.Session, *file)
	return nil
}

// clientEndpoints checks a server URL as the client does and returns the
// WebSocket URL and the HTTP base.
func clientEndpoints(raw string, insecure bool) (wsURL, base string, err error) {
	wsURL, base = raw, raw
	switch {
	case strings.HasPrefix(raw, "wss://"):
		base = "https://" + strings.TrimPrefix(raw, "wss://")
	case strings.HasPrefix(raw, "ws://"):
		base = "http://" + strings.TrimPrefix(raw, "ws://")
	case strings.HasPrefix(raw, "https://"):
		wsURL = "wss://" + strings.TrimSuffix(strings.TrimPrefix(raw, "https://"), "/") + "/v1/ws"
	case strings.HasPrefix(raw, "http://"):
		wsURL = "ws://" + strings.TrimSuffix(strings.TrimPrefix(raw, "http://"), "/") + "/v1/ws"
	default:
		return "", "", fmt.Errorf("server URL %q: want wss://, ws://, https:// or http://", raw)
	}
	base = strings.TrimSuffix(strings.TrimSuffix(base, "/"), "/v1/ws")
	if !insecure && strings.HasPrefix(base, "http://") {
		host := strings.TrimPrefix(base, "http://")
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
			host = host[:i]
		}
		host = strings.Trim(host, "[]")
		if host != "localhost" && !strings.HasPrefix(host, "127.") && host != "::1" {
			return "", "", fmt.Errorf("plain http to %s: TLS is required except to loopback (--insecure-plaintext to override)", host)
		}
	}
	return wsURL, base, nil
}

func saveCredentials(path, server string, t client.Token) error {
	key, err := t.Key.MarshalPrivateJWK()
	if err != nil {
		return err
	}
	cr := credentials{Server: server, Session: t.Session, Subject: t.Subject, Roles: t.Roles, Key: key,
		RefreshToken: t.RefreshToken, Seq: t.Seq}
	if !t.RefreshExpiry.IsZero() {
		cr.RefreshExpiry = t.RefreshExpiry.UnixMilli()
	}
	data, err := json.MarshalIndent(cr, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// Write a private temporary file and rename it, so that the file is
	// never readable by others nor half-written.
	f, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func loadCredentials(path string) (*credentials, client.Token, error) {
	var cr credentials
	st, err := os.Stat(path)
	if err != nil {
		return nil, client.Token{}, fmt.Errorf("%w (run sigil login first)", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, client.Token{}, fmt.Errorf("%s is readable by others (mode %v): refusing to use it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, client.Token{}, err
	}
	if err := json.Unmarshal(data, &cr); err != nil {
		return nil, client.Token{}, fmt.Errorf("%s: %w", path, err)
	}
	key, err := protocol.ParsePrivateJWK(cr.Key)
	if err != nil {
		return nil, client.Token{}, fmt.Errorf("%s: session key: %w", path, err)
	}
	if cr.RefreshToken == "" || cr.Session == "" || cr.Subject == "" {
		return nil, client.Token{}, fmt.Errorf("%s: incomplete credentials (run sigil login again)", path)
	}
	t := client.Token{RefreshToken: cr.RefreshToken, Key: key, Session: cr.Session, Subject: cr.Subject, Roles: cr.Roles, Seq: cr.Seq}
	return &cr, t, nil
}

// dialStored connects with stored credentials, saving every rotated
// refresh token (they are single-use) and the final seq.
func dialStored(ctx context.Context, path string, encrypt, insecure bool) (*client.Client, func(), error) {
	cr, tok, err := loadCredentials(path)
	if err != nil {
		return nil, nil, err
	}
	save := func(t client.Token) error { return saveCredentials(path, cr.Server, t) }
	c, err := client.Dial(ctx, cr.Server, &client.Options{
		Tokens:                 client.RefreshToken(tok, save),
		Encrypt:                encrypt,
		HTTPClient:             cliHTTPClient(),
		InsecureAllowPlaintext: insecure,
		OnRefresh: func(t client.Token) {
			if err := save(t); err != nil {
				fmt.Fprintln(os.Stderr, "sigil: saving the rotated refresh token:", err)
			}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	done := func() {
		t := c.Token()
		c.Close()
		if t.RefreshToken != "" {
			if err := save(t); err != nil {
				fmt.Fprintln(os.Stderr, "sigil: saving credentials:", err)
			}
		}
	}
	return c, done, nil
}

func cliHTTPClient() *http.Client { return &http.Client{Timeout: 30 * time.Second} }
