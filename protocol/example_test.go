package protocol_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// A fixed clock keeps the example reproducible.
var exampleNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func clock() time.Time { return exampleNow }

// The whole flow on one page: the server issues a session token bound to
// the client's key, the client says hello and publishes, and the server
// verifies both frames.
func Example() {
	ctx := context.Background()
	serverKey, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	jwks, _ := protocol.NewKeySet(serverKey.Public())
	issuer := &protocol.TokenIssuer{Key: serverKey, Issuer: "https://chat.example", Audience: "wss://chat.example/v1/ws", Now: clock}
	verifier := protocol.NewVerifier(protocol.VerifierConfig{
		Tokens: &protocol.TokenVerifier{Keys: jwks, Issuer: "https://chat.example", Audience: "wss://chat.example/v1/ws", Now: clock},
		Now:    clock,
	})

	// The client makes a session key; the server binds a token to it.
	sessionKey, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	token, claims, _ := issuer.Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"user"}, JKT: sessionKey.Public().Thumbprint()})

	// hello: the token and the public key, signed with the session key.
	signer := &protocol.ClientSigner{Key: sessionKey, Session: claims.Session, Subject: "alice", Now: clock}
	jwk, _ := sessionKey.Public().MarshalJSON()
	body, _ := json.Marshal(protocol.HelloBody{Token: token, JWK: jwk})
	hello, _ := signer.Sign(&protocol.Envelope{Action: protocol.ActHello, Body: body})
	session, _, err := verifier.VerifyHello(ctx, hello)
	fmt.Println("hello:", session.Subject(), session.Roles(), err)

	// Every later frame goes through the full pipeline.
	pub, _ := signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi"}`)})
	msg, err := verifier.Verify(ctx, pub, session)
	fmt.Println("pub:", msg.Action, msg.Channel, msg.Seq, string(msg.Body), err)

	// The same frame again is a replay.
	_, err = verifier.Verify(ctx, pub, session)
	fmt.Println("again:", protocol.CodeOf(err))
	// Output:
	// hello: alice [user] <nil>
	// pub: pub rooms.lobby 2 {"text":"hi"} <nil>
	// again: replay_id
}

// A policy grants actions on channel patterns to roles; anything else is
// forbidden.
func ExamplePolicy() {
	p, _ := protocol.ParsePolicy([]byte(`{"rules":[
		{"action":"pub","channel":"rooms.>","roles":["user"]},
		{"action":"pub","channel":"announce.*","roles":["announcer"]}]}`))
	fmt.Println(p.Allow("pub", "rooms.lobby", []string{"user"}))
	fmt.Println(protocol.CodeOf(p.Allow("pub", "announce.news", []string{"user"})))
	fmt.Println(p.Allow("pub", "announce.news", []string{"announcer"}))
	// Output:
	// <nil>
	// forbidden
	// <nil>
}

// Errors carry stable codes; match them with errors.Is or CodeOf.
func ExampleCodeOf() {
	p := protocol.DefaultPolicy()
	err := p.Allow(protocol.ActPub, "announce.news", []string{"user"})
	fmt.Println(protocol.CodeOf(err), protocol.IsCode(err, protocol.CodeForbidden))
	// Output: forbidden true
}

// Body encryption: a content key seals a body as JWE (dir, A256GCM); the
// key travels to a client wrapped to its P-256 agreement key.
func ExampleSealBody() {
	chKey, _ := protocol.NewContentKey(protocol.ChannelScope("rooms.lobby"), nil)
	enc, _ := protocol.SealBody(chKey, []byte(`{"text":"secret"}`))

	agreement, _ := protocol.GenerateAgreementKey(nil)
	wrapped, _ := protocol.WrapContentKey(chKey, &agreement.PublicKey)
	received, _ := protocol.UnwrapContentKey(wrapped, agreement)

	ring := protocol.NewKeyRing(nil)
	ring.Add(received, time.Time{})
	plain, err := protocol.OpenBody(enc, ring, protocol.ChannelScope("rooms.lobby"))
	fmt.Println(string(plain), err)
	// Output: {"text":"secret"} <nil>
}

// A client verifies server frames against the server's JWKS.
func ExampleFrameVerifier() {
	serverKey, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	jwks, _ := protocol.NewKeySet(serverKey.Public())
	signer := &protocol.ServerSigner{Key: serverKey}
	frame, _ := signer.Sign(&protocol.Envelope{Action: protocol.ActPong, Session: "6a2f41a1-7c1b-4c8e-8d2a-1b2c3d4e5f60"})

	fv := &protocol.FrameVerifier{Keys: jwks, Session: "6a2f41a1-7c1b-4c8e-8d2a-1b2c3d4e5f60", Subject: "alice"}
	m, err := fv.Verify(frame)
	fmt.Println(m.Action, err)
	_, err = fv.Verify(frame)
	fmt.Println(protocol.CodeOf(err))
	// Output:
	// pong <nil>
	// replay_id
}
