package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/protocol"
)

// Token is a session token with what is needed to use it: the session key
// its cnf.jkt names, and the refresh token that renews it. Token, RefreshToken
// and Key are secrets; String and LogValue never print them.
type Token struct {
	Token         string               // the session token (JWT)
	RefreshToken  string               // single-use refresh token; may be empty
	Key           *protocol.PrivateKey // the session key bound to Token
	Session       string               // sid
	Subject       string               // sub
	Roles         []string             // roles
	Expiry        time.Time            // the session token's expiry
	RefreshExpiry time.Time            // the refresh token's expiry, if known
	// Seq is the last seq the session used. A program that continues a
	// session in a new process (sigil send after sigil login) must start
	// above it, or the server rejects its frames as replays.
	Seq uint64
}

// String describes the token without its secrets.
func (t Token) String() string {
	return fmt.Sprintf("Token(sid=%s sub=%s exp=%s)", t.Session, t.Subject, t.Expiry.UTC().Format(time.RFC3339))
}

// LogValue keeps secrets out of slog output.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("sid", t.Session), slog.String("sub", t.Subject), slog.Time("exp", t.Expiry))
}

// TokenRequest is what a TokenSource needs to obtain a token.
type TokenRequest struct {
	// BaseURL is the server's HTTP base ("https://host:port"), derived from
	// the WebSocket URL given to Dial.
	BaseURL string
	// HTTPClient is Options.HTTPClient.
	HTTPClient *http.Client
	// Algorithm is Options.Algorithm, for sources that generate the
	// session key.
	Algorithm jose.SignatureAlgorithm
}

// TokenSource obtains a session token bound to a session key. Dial calls it
// once; the client calls it again only when the server requires a new
// token (close 4001/4002) and the refresh token cannot renew the current
// one. Implementations must be safe for concurrent use.
type TokenSource interface {
	Token(ctx context.Context, r *TokenRequest) (*Token, error)
}

// TokenSourceFunc adapts a function to TokenSource.
type TokenSourceFunc func(ctx context.Context, r *TokenRequest) (*Token, error)

// Token implements TokenSource.
func (f TokenSourceFunc) Token(ctx context.Context, r *TokenRequest) (*Token, error) {
	return f(ctx, r)
}

// newSessions is a TokenSource whose every token starts a new session of
// its own (Password, External, LoginSessions): the client may abandon a
// session and go on with another (Client.refreshFailed).
type newSessions TokenSourceFunc

func (f newSessions) Token(ctx context.Context, r *TokenRequest) (*Token, error) {
	return f(ctx, r)
}

// Password returns a TokenSource that logs in with a user name and password
// (grant_type password, spec.md §13.1), with a fresh session key for every
// token.
func Password(username, password string) TokenSource {
	return newSessions(func(ctx context.Context, r *TokenRequest) (*Token, error) {
		return requestToken(ctx, r, protocol.TokenRequest{GrantType: protocol.GrantPassword, Username: username, Password: password})
	})
}

// External returns a TokenSource that exchanges an identity provider's
// token (grant_type external, spec.md §13.1) for a session token. assertion
// is called for every token request, so it can return a fresh assertion.
func External(assertion func(ctx context.Context) (string, error)) TokenSource {
	return newSessions(func(ctx context.Context, r *TokenRequest) (*Token, error) {
		a, err := assertion(ctx)
		if err != nil {
			return nil, fmt.Errorf("sigil client: identity provider assertion: %w", err)
		}
		return requestToken(ctx, r, protocol.TokenRequest{GrantType: protocol.GrantExternal, Assertion: a})
	})
}

// SessionToken returns a TokenSource for a token obtained elsewhere, with
// its session key. It gives the token once; when the server requires a new
// token the client renews it with t.RefreshToken if there is one, and
// otherwise closes.
func SessionToken(t Token) TokenSource {
	if t.Key == nil {
		return TokenSourceFunc(func(context.Context, *TokenRequest) (*Token, error) {
			return nil, errors.New("sigil client: SessionToken needs the session key")
		})
	}
	return TokenSourceFunc(func(context.Context, *TokenRequest) (*Token, error) {
		c := t
		return &c, nil
	})
}

// RefreshToken returns a TokenSource that renews a stored session over
// POST /v1/refresh (spec.md §13.2): t needs RefreshToken, Key, Session,
// Subject and Seq. The refresh token rotates on use, so save is called with
// the new token before it is used; a save error fails the request.
func RefreshToken(t Token, save func(Token) error) TokenSource {
	var cur = t
	return TokenSourceFunc(func(ctx context.Context, r *TokenRequest) (*Token, error) {
		signer := &protocol.ClientSigner{Key: cur.Key, Session: cur.Session, Subject: cur.Subject}
		signer.SetSeq(cur.Seq)
		nt, err := refreshHTTP(ctx, r.BaseURL, r.HTTPClient, signer, &cur)
		if err != nil {
			return nil, err
		}
		if save != nil {
			if err := save(*nt); err != nil {
				return nil, fmt.Errorf("sigil client: saving the rotated refresh token: %w", err)
			}
		}
		cur = *nt
		return nt, nil
	})
}

// newKey generates a key of r's algorithm (EdDSA by default) and returns it
// with its public JWK.
func newKey(r *TokenRequest) (*protocol.PrivateKey, []byte, error) {
	alg := r.Algorithm
	if alg == "" {
		alg = protocol.EdDSA
	}
	key, err := protocol.GenerateKey(alg, nil)
	if err != nil {
		return nil, nil, err
	}
	jwk, err := key.Public().MarshalJSON()
	if err != nil {
		return nil, nil, err
	}
	return key, jwk, nil
}

// requestToken asks POST /v1/token for a token bound to a fresh session
// key; req carries the grant, requestToken adds the key.
func requestToken(ctx context.Context, r *TokenRequest, req protocol.TokenRequest) (*Token, error) {
	key, jwk, err := newKey(r)
	if err != nil {
		return nil, err
	}
	req.JWK = jwk
	var tr protocol.TokenResponse
	if err := postJSON(ctx, r.HTTPClient, r.BaseURL+"/v1/token", req, &tr); err != nil {
		return nil, err
	}
	return newToken(&tr, key, 0)
}

// refreshHTTP renews cur over /v1/refresh with a proof signed by signer,
// which continues the session's seq.
func refreshHTTP(ctx context.Context, base string, hc *http.Client, signer *protocol.ClientSigner, cur *Token) (*Token, error) {
	if cur.RefreshToken == "" {
		return nil, errors.New("sigil client: no refresh token")
	}
	body, err := json.Marshal(protocol.RefreshBody{RefreshToken: cur.RefreshToken})
	if err != nil {
		return nil, err
	}
	env := &protocol.Envelope{Action: protocol.ActRefresh, Body: body}
	proof, err := signer.Sign(env)
	if err != nil {
		return nil, err
	}
	var tr protocol.TokenResponse
	if err := postJSON(ctx, hc, base+"/v1/refresh", protocol.RefreshRequest{RefreshToken: cur.RefreshToken, Proof: string(proof)}, &tr); err != nil {
		return nil, err
	}
	if tr.Session != cur.Session || tr.Subject != cur.Subject {
		return nil, errors.New("sigil client: refresh answered for another session")
	}
	return newToken(&tr, cur.Key, env.Seq)
}

// newToken is the Token of a token response, bound to key, whose session
// has used seq.
func newToken(tr *protocol.TokenResponse, key *protocol.PrivateKey, seq uint64) (*Token, error) {
	if tr.Token == "" || tr.Session == "" || tr.Subject == "" {
		return nil, errors.New("sigil client: token response lacks token, sid or sub")
	}
	return &Token{
		Token: tr.Token, RefreshToken: tr.RefreshToken, Key: key,
		Session: tr.Session, Subject: tr.Subject, Roles: tr.Roles,
		Expiry: tr.Expiry(), RefreshExpiry: tr.RefreshExpiry(), Seq: seq,
	}, nil
}

// postJSON posts v and decodes a 200 answer into out; other answers become
// an *HTTPError.
func postJSON(ctx context.Context, hc *http.Client, url string, v, out any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("sigil client: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("sigil client: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		he := &HTTPError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
		var eb protocol.ErrorResponse
		if json.Unmarshal(body, &eb) == nil {
			he.Code, he.Message = eb.Error, eb.Message
		}
		return he
	}
	// Answers are strict JSON (spec.md §13): no duplicate, case-variant or
	// unknown members.
	if err := protocol.DecodeBody(body, out); err != nil {
		return fmt.Errorf("sigil client: bad answer from %s: %w", req.URL.Path, err)
	}
	return nil
}

// Login is a long-lived credential from which any number of processes
// mint sessions of their own (spec.md §4.5): a login token bound to a
// login key. Each session minted from it has its own sid, seq, session key
// and refresh tokens, so processes never share a seq or a single-use
// refresh token. Token and Key are secrets; String never prints them.
type Login struct {
	Token   string               // the login token (secret)
	Key     *protocol.PrivateKey // the login key the token is bound to (secret)
	Subject string               // sub
	Roles   []string             // roles
	Expiry  time.Time            // the end of the login; then log in again
}

// String describes the login without its secrets.
func (l Login) String() string {
	return fmt.Sprintf("Login(sub=%s exp=%s)", l.Subject, l.Expiry.UTC().Format(time.RFC3339))
}

// LogIn signs in with a user name and password and returns a login bound
// to a fresh login key (Algorithm r.Algorithm, EdDSA by default) instead
// of a session (spec.md §4.5). Use LoginSessions to mint sessions from it.
func LogIn(ctx context.Context, r *TokenRequest, username, password string) (*Login, error) {
	key, jwk, err := newKey(r)
	if err != nil {
		return nil, err
	}
	req := protocol.TokenRequest{GrantType: protocol.GrantPassword, Username: username, Password: password, JWK: jwk, Login: true}
	var lr protocol.LoginResponse
	if err := postJSON(ctx, r.HTTPClient, r.BaseURL+"/v1/token", req, &lr); err != nil {
		return nil, err
	}
	if lr.LoginToken == "" || lr.Subject == "" {
		return nil, errors.New("sigil client: login response lacks login_token or sub")
	}
	return &Login{Token: lr.LoginToken, Key: key, Subject: lr.Subject, Roles: lr.Roles, Expiry: time.UnixMilli(lr.ExpiresAt)}, nil
}

// LoginSessions returns a TokenSource that mints a new session from l for
// every token it gives (grant_type login, spec.md §4.5): a fresh session
// key, a new sid, and refresh tokens of its own. Any number of clients,
// in any number of processes, may use one login at once.
func LoginSessions(l Login) TokenSource {
	return newSessions(func(ctx context.Context, r *TokenRequest) (*Token, error) {
		if l.Key == nil || l.Token == "" {
			return nil, errors.New("sigil client: LoginSessions needs the login token and key")
		}
		key, jwk, err := newKey(r)
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(protocol.LoginProofBody{LoginToken: l.Token, JWK: jwk})
		if err != nil {
			return nil, err
		}
		// Each proof is the one frame of a session id of its own.
		signer := &protocol.ClientSigner{Key: l.Key, Session: uuid.NewString(), Subject: l.Subject}
		proof, err := signer.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: body})
		if err != nil {
			return nil, err
		}
		req := protocol.TokenRequest{GrantType: protocol.GrantLogin, LoginToken: l.Token, Proof: string(proof), JWK: jwk}
		var tr protocol.TokenResponse
		if err := postJSON(ctx, r.HTTPClient, r.BaseURL+"/v1/token", req, &tr); err != nil {
			return nil, err
		}
		if tr.Subject != l.Subject {
			return nil, errors.New("sigil client: the login grant answered for another subject")
		}
		return newToken(&tr, key, 0)
	})
}
