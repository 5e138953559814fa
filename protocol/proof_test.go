package protocol_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// adminProof signs a proof frame with the fixture's client key: act, body
// {"jwk", "req"}.
func adminProof(t *testing.T, signer *protocol.ClientSigner, act string, jwk []byte) []byte {
	t.Helper()
	body := mustJSON(t, protocol.AdminProofBody{JWK: jwk, Req: json.RawMessage(`{}`)})
	frame, err := signer.Sign(&protocol.Envelope{Action: act, Body: body})
	must(t, err)
	return frame
}

func TestVerifyTokenProof(t *testing.T) {
	f := newFixture(t, "ES256")
	ctx := context.Background()
	admin, err := protocol.NewPolicy([]protocol.Rule{{Action: "*", Roles: []string{"admin"}}})
	must(t, err)
	v := protocol.NewVerifier(protocol.VerifierConfig{Tokens: f.verifier.Config().Tokens, Now: f.verifier.Config().Now, Policy: admin})
	tok, claims, err := f.issuer.Issue(protocol.IssueRequest{Subject: "root", Roles: []string{"admin"}, JKT: f.client.Public().Thumbprint()})
	must(t, err)
	signer := &protocol.ClientSigner{Key: f.client, Session: claims.Session, Subject: "root", Now: f.verifier.Config().Now}
	jwk, err := f.client.Public().MarshalJSON()
	must(t, err)

	proof := adminProof(t, signer, "admin.sessions", jwk)
	s, m, err := v.VerifyTokenProof(ctx, tok, proof)
	must(t, err)
	if s.ID() != claims.Session || s.Subject() != "root" || s.Key().Thumbprint() != claims.Confirm.JKT || s.Key().KeyID() != claims.Confirm.JKT || m.Action != "admin.sessions" {
		t.Fatalf("session %+v, message %+v", s, m)
	}
	// Each proof is usable once.
	if _, _, err := v.VerifyTokenProof(ctx, tok, proof); !protocol.IsCode(err, protocol.CodeReplayID) {
		t.Fatalf("replayed proof: %v", err)
	}
	// The jwk must be the token's key, even if the proof is signed by the
	// jwk's own key.
	mallory, err := protocol.KeyFromSeed(protocol.EdDSA, "mallory", "")
	must(t, err)
	mjwk, err := mallory.Public().MarshalJSON()
	must(t, err)
	ms := &protocol.ClientSigner{Key: mallory, Session: claims.Session, Subject: "root", Now: signer.Now}
	ms.SetSeq(signer.Seq())
	if _, _, err := v.VerifyTokenProof(ctx, tok, adminProof(t, ms, "admin.sessions", mjwk)); !protocol.IsCode(err, protocol.CodeKeyMismatch) {
		t.Fatalf("another key's proof: %v", err)
	}
	// The token's key in the body, but signed by another key.
	if _, _, err := v.VerifyTokenProof(ctx, tok, adminProof(t, ms, "admin.sessions", jwk)); !protocol.IsCode(err, protocol.CodeUnknownKey) {
		t.Fatalf("signed by another key: %v", err)
	}
	// No jwk in the body.
	noKey, err := signer.Sign(&protocol.Envelope{Action: "admin.sessions", Body: json.RawMessage(`{"req":{}}`)})
	must(t, err)
	if _, _, err := v.VerifyTokenProof(ctx, tok, noKey); !protocol.IsCode(err, protocol.CodeBadClaims) {
		t.Fatalf("no jwk: %v", err)
	}
	// A session without the admin role is refused by the policy.
	if _, _, err := v.VerifyTokenProof(ctx, f.token, adminProof(t, f.signer, "admin.sessions", jwk)); !protocol.IsCode(err, protocol.CodeForbidden) {
		t.Fatalf("user role: %v", err)
	}
	// A bad token fails first.
	if _, _, err := v.VerifyTokenProof(ctx, tok+"x", adminProof(t, signer, "admin.sessions", jwk)); !protocol.IsCode(err, protocol.CodeBadToken) {
		t.Fatalf("bad token: %v", err)
	}
	f.now = f.now.Add(16 * time.Minute)
	if _, _, err := v.VerifyTokenProof(ctx, tok, adminProof(t, signer, "admin.sessions", jwk)); !protocol.IsCode(err, protocol.CodeTokenExpired) {
		t.Fatalf("expired token: %v", err)
	}
}

func TestVerifyRecordProof(t *testing.T) {
	f := newFixture(t, "EdDSA")
	ctx := context.Background()
	s := f.hello(t) // seq 1, on the WebSocket
	jwk, err := f.client.Public().MarshalJSON()
	must(t, err)
	rec := protocol.SessionRecord{
		ID: f.claims.Session, Subject: "alice", Roles: f.claims.Roles, JWK: jwk,
		TokenID: f.claims.ID, IssuedAt: f.claims.IssuedAtTime(), Expiry: f.now.Add(24 * time.Hour),
	}
	refresh := func() []byte {
		frame, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: json.RawMessage(`{"refresh_token":"rt"}`)})
		must(t, err)
		return frame
	}
	p := refresh()
	rs, m, err := f.verifier.VerifyRecordProof(ctx, rec, p)
	must(t, err)
	if rs.ID() != s.ID() || rs.Key().Thumbprint() != s.Key().Thumbprint() || m.Action != protocol.ActRefresh || m.Seq != 2 {
		t.Fatalf("session %+v, message %+v", rs, m)
	}
	// The proof shares the session's replay state with its WebSocket
	// frames: a frame that reuses its seq is a replay.
	other := &protocol.ClientSigner{Key: f.client, Session: f.claims.Session, Subject: "alice", Now: f.signer.Now}
	other.SetSeq(1)
	ws, err := other.Sign(&protocol.Envelope{Action: protocol.ActPing})
	must(t, err)
	if ws2, _ := protocol.UnsafeEnvelope(ws); ws2.Seq != 2 {
		t.Fatalf("seq %d", ws2.Seq)
	}
	if _, err := f.verifier.Verify(ctx, ws, s); !protocol.IsCode(err, protocol.CodeReplaySeq) {
		t.Fatalf("WebSocket frame reusing the proof's seq: %v", err)
	}
	// Step 9 runs against the record's expiry, not the token's.
	f.now = f.now.Add(20 * time.Minute) // past the token's exp
	if _, _, err := f.verifier.VerifyRecordProof(ctx, rec, refresh()); err != nil {
		t.Fatalf("after the token expired, within the family: %v", err)
	}
	exp := rec
	exp.Expiry = f.now.Add(-time.Second)
	if _, _, err := f.verifier.VerifyRecordProof(ctx, exp, refresh()); !protocol.IsCode(err, protocol.CodeTokenExpired) {
		t.Fatalf("after the family's end: %v", err)
	}
	f.revoked.RevokeToken(f.claims.ID, f.now.Add(time.Hour))
	if _, _, err := f.verifier.VerifyRecordProof(ctx, rec, refresh()); !protocol.IsCode(err, protocol.CodeTokenRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	bad := rec
	bad.JWK = []byte(`{"kty":"oct","k":"AAAA"}`)
	if _, _, err := f.verifier.VerifyRecordProof(ctx, bad, refresh()); !protocol.IsCode(err, protocol.CodeInternal) {
		t.Fatalf("a stored key that does not parse: %v", err)
	}
}

func TestUnsafeEnvelope(t *testing.T) {
	f := newFixture(t, "EdDSA")
	frame, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Corr: "c-1", Body: json.RawMessage(`{"a":1}`)})
	must(t, err)
	env, err := protocol.UnsafeEnvelope(frame)
	if err != nil || env.Corr != "c-1" || env.Channel != "rooms.lobby" || env.Seq != 1 {
		t.Fatalf("%v %+v", err, env)
	}
	for in, code := range map[string]protocol.Code{
		"a.b":               protocol.CodeMalformed,
		string(frame) + "=": protocol.CodeMalformed,
		b64.EncodeToString([]byte(`{}`)) + "." + b64.EncodeToString([]byte(`{"act":"Pub"}`)) + ".":   protocol.CodeBadClaims,
		b64.EncodeToString([]byte(`{}`)) + "." + b64.EncodeToString([]byte(`{"id":1,"id":2}`)) + ".": protocol.CodeBadClaims,
	} {
		if _, err := protocol.UnsafeEnvelope([]byte(in)); !protocol.IsCode(err, code) {
			t.Errorf("UnsafeEnvelope(%.40s): %v; want %s", in, err, code)
		}
	}
}
