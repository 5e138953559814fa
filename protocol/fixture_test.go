package protocol_test

import (
	"context"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// fixture is a server with one key and a client session, on a fixed clock.
type fixture struct {
	now      time.Time
	server   *protocol.PrivateKey
	keys     *protocol.KeySet
	issuer   *protocol.TokenIssuer
	verifier *protocol.Verifier
	revoked  *protocol.MemoryRevocations
	client   *protocol.PrivateKey
	token    string
	claims   *protocol.SessionClaims
	signer   *protocol.ClientSigner
}

func newFixture(t testing.TB, alg string) *fixture {
	t.Helper()
	f := &fixture{now: time.UnixMilli(1767225600000)}
	clock := func() time.Time { return f.now }
	var err error
	f.server, err = protocol.KeyFromSeed(protocol.EdDSA, "server", "server-1")
	must(t, err)
	f.keys, err = protocol.NewKeySet(f.server.Public())
	must(t, err)
	f.client, err = protocol.KeyFromSeed(protocol.ES256, "client", "")
	if alg == "EdDSA" {
		f.client, err = protocol.KeyFromSeed(protocol.EdDSA, "client", "")
	}
	must(t, err)
	f.revoked = protocol.NewMemoryRevocations()
	f.issuer = &protocol.TokenIssuer{Key: f.server, Issuer: "https://sigil.test", Audience: "wss://sigil.test/v1/ws", Now: clock}
	f.verifier = protocol.NewVerifier(protocol.VerifierConfig{
		Tokens: &protocol.TokenVerifier{Keys: f.keys, Issuer: "https://sigil.test", Audience: "wss://sigil.test/v1/ws", Now: clock, Revocation: f.revoked},
		Now:    clock,
	})
	f.token, f.claims, err = f.issuer.Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"user"}, JKT: f.client.Public().Thumbprint()})
	must(t, err)
	f.signer = &protocol.ClientSigner{Key: f.client, Session: f.claims.Session, Subject: "alice", Now: clock}
	return f
}

func (f *fixture) hello(t testing.TB) *protocol.Session {
	t.Helper()
	jwk, err := f.client.Public().MarshalJSON()
	must(t, err)
	env := &protocol.Envelope{Action: protocol.ActHello}
	env.Body = mustJSON(t, protocol.HelloBody{Token: f.token, JWK: jwk})
	frame, err := f.signer.Sign(env)
	must(t, err)
	s, _, err := f.verifier.VerifyHello(context.Background(), frame)
	must(t, err)
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
