package client_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/server"
)

// TestExternalGrant logs in with an identity provider's JWT; the session
// key is ES256 and the server's keys are pinned.
func TestExternalGrant(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	idp := jose.JSONWebKey{Key: pub, KeyID: "idp-1", Algorithm: string(jose.EdDSA), Use: "sig"}
	e := newEnv(t, func(c *server.Config) {
		c.Authenticator = server.Authenticators{
			Password: server.StaticUsers{Doc: testUsers()},
			External: &server.ExternalIssuer{Issuer: "https://idp.example", Audience: "sigil",
				Keys: &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{idp}}, DefaultRoles: []string{"user"}},
		}
	})
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: priv, KeyID: "idp-1"}}, nil)
	must(t, err)
	assertion := func(ctx context.Context) (string, error) {
		now := time.Now()
		return jwt.Signed(sig).Claims(jwt.Claims{Issuer: "https://idp.example", Audience: jwt.Audience{"sigil"}, Subject: "dora",
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()
	}
	ctx := ctxT(t)
	c, err := client.Dial(ctx, e.url, &client.Options{Tokens: client.External(assertion), JWKS: e.srv.KeySet(), Algorithm: "ES256"})
	must(t, err)
	defer c.Close()
	if _, sub := c.Session(); sub != "dora" {
		t.Fatalf("sub %s", sub)
	}
	s, err := c.Subscribe(ctx, "rooms.idp")
	must(t, err)
	must(t, c.Publish(ctx, "rooms.idp", text{"via idp"}))
	if m := next(t, s); m.From != "dora" {
		t.Fatal(m.From)
	}

	// A bad assertion is the uniform invalid_grant.
	bad := func(ctx context.Context) (string, error) { return "not-a-jwt", nil }
	_, err = client.Dial(ctx, e.url, &client.Options{Tokens: client.External(bad)})
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != 401 || he.Code != "invalid_grant" {
		t.Fatalf("want 401 invalid_grant, got %v", err)
	}
}

// TestPlaintextRefused: ws:// to a non-loopback host needs the loud opt-out.
func TestPlaintextRefused(t *testing.T) {
	_, err := client.Dial(context.Background(), "ws://chat.example/v1/ws", &client.Options{Tokens: client.Password("a", "b")})
	if err == nil {
		t.Fatal("plain ws to a remote host accepted")
	}
	_, err = client.Dial(context.Background(), "https://chat.example?x=1", &client.Options{Tokens: client.Password("a", "b")})
	if err == nil {
		t.Fatal("query accepted")
	}
}
