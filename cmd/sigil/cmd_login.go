package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
)

// credentials is the file sigil login writes and send/listen read: a
// login (spec.md §4.5) from which every command mints a session of its
// own, so that any number of them can run at once. It holds the login key
// and the login token: it is written with mode 0600, and never rewritten
// by the commands that use it.
type credentials struct {
	Server     string          `json:"server"`      // WebSocket URL
	Subject    string          `json:"sub"`         // user
	Roles      []string        `json:"roles"`       // roles at login
	Key        json.RawMessage `json:"key"`         // private login JWK (secret)
	LoginToken string          `json:"login_token"` // bound to the login key (secret)
	Expiry     int64           `json:"expires_at"`  // end of the login, Unix ms
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
	fs := newFlagSet("login", "--server URL --user NAME [flags]", `
Signs in and keeps a login in the credentials file (mode 0600): every later
send or listen mints a session of its own from it (spec.md §4.5), so any
number of them can run at once. The password is asked for without echo on
a terminal, or read from the first line of stdin.`)
	server := fs.String("server", os.Getenv("SIGIL_SERVER"), "server URL (wss://host/v1/ws or https://host); env SIGIL_SERVER")
	user := fs.String("user", "", "user name")
	file := fs.String("credentials", defaultCredentialsPath(), "credentials file (written with mode 0600); env SIGIL_CREDENTIALS")
	alg := fs.String("alg", "EdDSA", "session key algorithm: EdDSA or ES256")
	insecure := fs.Bool("insecure-plaintext", false, "allow ws:// or http:// to a non-loopback host (spec.md §2.3 forbids it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" || *user == "" {
		return badUsage(fs, "login needs --server and --user")
	}
	if fs.NArg() != 0 {
		return badUsage(fs, "login takes no arguments, got %q", fs.Args())
	}
	password, err := readPassword(stdin, fmt.Sprintf("password for %s: ", *user), false)
	if err != nil {
		return err
	}
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
	l, err := client.LogIn(ctx, &client.TokenRequest{BaseURL: base, HTTPClient: cliHTTPClient(), Algorithm: a}, *user, password)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if err := saveCredentials(*file, wsURL, *l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "logged in as %s until %s; credentials in %s\n", l.Subject, l.Expiry.Local().Format(time.DateTime), *file)
	return nil
}

// clientEndpoints checks a server URL as the client does (client.Endpoints)
// and returns the WebSocket URL and the HTTP base.
func clientEndpoints(raw string, insecure bool) (wsURL, base string, err error) {
	wsURL, base, err = client.Endpoints(raw, insecure)
	if err != nil && !insecure && strings.Contains(err.Error(), "TLS is required") {
		err = fmt.Errorf("%w (--insecure-plaintext to override)", err)
	}
	return wsURL, base, err
}

func saveCredentials(path, server string, l client.Login) error {
	key, err := l.Key.MarshalPrivateJWK()
	if err != nil {
		return err
	}
	cr := credentials{Server: server, Subject: l.Subject, Roles: l.Roles, Key: key, LoginToken: l.Token, Expiry: l.Expiry.UnixMilli()}
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

// loginAgain is what every stored-credentials failure says to do.
const loginAgain = "run `sigil login` again"

func loadCredentials(path string, now time.Time) (*credentials, client.Login, error) {
	var cr credentials
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, client.Login{}, fmt.Errorf("--credentials %s: no such file: run `sigil login` first", path)
	}
	if err != nil {
		return nil, client.Login{}, fmt.Errorf("--credentials: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, client.Login{}, fmt.Errorf("--credentials %s is readable by others (mode %v): refusing to use it; chmod 600 it, or %s", path, st.Mode().Perm(), loginAgain)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, client.Login{}, fmt.Errorf("--credentials: %w", err)
	}
	if err := protocol.DecodeBody(data, &cr); err != nil || cr.LoginToken == "" || cr.Subject == "" || cr.Server == "" {
		return nil, client.Login{}, fmt.Errorf("--credentials %s: not a login written by this version of sigil: %s", path, loginAgain)
	}
	key, err := protocol.ParsePrivateJWK(cr.Key)
	if err != nil {
		return nil, client.Login{}, fmt.Errorf("--credentials %s: login key: %v: %s", path, err, loginAgain)
	}
	exp := time.UnixMilli(cr.Expiry)
	if !now.Before(exp) {
		return nil, client.Login{}, fmt.Errorf("your login as %s expired at %s: %s", cr.Subject, exp.Local().Format(time.DateTime), loginAgain)
	}
	return &cr, client.Login{Token: cr.LoginToken, Key: key, Subject: cr.Subject, Roles: cr.Roles, Expiry: exp}, nil
}

// dialStored connects with a session of its own, minted from the stored
// login: any number of commands may do so at once. set, if any, adds to
// the options. While the server answers that a store it needs does not
// answer (dialAgain), it tries again until ctx ends.
func dialStored(ctx context.Context, path string, encrypt, insecure bool, set ...func(*client.Options)) (*client.Client, func(), error) {
	cr, l, err := loadCredentials(path, time.Now())
	if err != nil {
		return nil, nil, err
	}
	o := &client.Options{
		Tokens:                 client.LoginSessions(l),
		Encrypt:                encrypt,
		HTTPClient:             cliHTTPClient(),
		InsecureAllowPlaintext: insecure,
	}
	for _, f := range set {
		f(o)
	}
	for {
		c, err := client.Dial(ctx, cr.Server, o)
		if err == nil {
			return c, func() { c.Close() }, nil
		}
		wait, again := dialAgain(err)
		if !again {
			return nil, nil, loginHint(err)
		}
		t := time.NewTimer(wait + rand.N(wait/2)) // jittered: commands started together do not retry together
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, loginHint(err)
		}
	}
}

// dialAgain reports whether a dial that failed may be tried again, and
// after how long: when the server answered unavailable (a store it needs
// did not answer: 503 with Retry-After to the login grant, or a hello
// closed with 4006), nothing was consumed, and the server asks for a retry
// (spec.md §13.4, §15).
func dialAgain(err error) (time.Duration, bool) {
	var he *client.HTTPError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusServiceUnavailable:
		if s, err := strconv.Atoi(he.RetryAfter); err == nil && s > 0 {
			return min(time.Duration(s)*time.Second, 10*time.Second), true
		}
		return time.Second, true
	case he == nil && protocol.CodeOf(err) == protocol.CodeUnavailable:
		return time.Second, true
	}
	return 0, false
}

// loginHint adds what to do to an error that means the login is no
// longer good: refused by the server (expired, revoked, or revoked with
// its family after a refresh-token reuse). A refresh that failed without
// a refusal (a store the server needs did not answer: unavailable, or
// the connection was lost) says nothing of the login, and gets no hint.
func loginHint(err error) error {
	var he *client.HTTPError
	if errors.As(err, &he) && he.Code == "invalid_grant" || errors.Is(err, client.ErrRevoked) ||
		errors.Is(err, client.ErrRefreshFailed) && protocol.CodeOf(err) == protocol.CodeBadToken {
		return fmt.Errorf("%w: the login was revoked or has expired: %s", err, loginAgain)
	}
	return err
}

func cliHTTPClient() *http.Client { return &http.Client{Timeout: 30 * time.Second} }
