package protocol_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/protocol"
)

// loginFixture is a login record and a valid proof for it.
func loginFixture(t testing.TB) (protocol.SessionRecord, *protocol.ClientSigner, []byte, func() time.Time) {
	now := time.UnixMilli(1767225600000)
	clock := func() time.Time { return now }
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := key.Public().MarshalJSON()
	rec := protocol.SessionRecord{ID: uuid.NewString(), Subject: "alice", Roles: []string{"user"}, JWK: jwk,
		IssuedAt: now.Add(-time.Hour), Expiry: now.Add(time.Hour)}
	body, _ := json.Marshal(protocol.LoginProofBody{LoginToken: "t", JWK: jwk})
	s := &protocol.ClientSigner{Key: key, Session: uuid.NewString(), Subject: "alice", Now: clock}
	proof, err := s.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return rec, s, proof, clock
}

// A login proof (spec.md §4.5) verifies once: its replay state is its own
// sid's, so proofs with other sids verify at once, in any order.
func TestVerifyLoginProof(t *testing.T) {
	rec, s, proof, clock := loginFixture(t)
	v := protocol.NewVerifier(protocol.VerifierConfig{Now: clock})
	m, err := v.VerifyLoginProof(context.Background(), rec, proof)
	if err != nil || m.Subject != "alice" || m.Action != protocol.ActRefresh {
		t.Fatalf("%v %+v", err, m)
	}
	if _, err := v.VerifyLoginProof(context.Background(), rec, proof); protocol.CodeOf(err) != protocol.CodeReplayID {
		t.Fatalf("replayed proof: %v", err)
	}
	s.Session = uuid.NewString()
	s.SetSeq(0)
	other, _ := s.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: json.RawMessage(`{}`)})
	if _, err := v.VerifyLoginProof(context.Background(), rec, other); err != nil {
		t.Fatalf("a proof with another sid: %v", err)
	}
	rec.Subject = "bob"
	s.Session = uuid.NewString()
	s.SetSeq(0)
	third, _ := s.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: json.RawMessage(`{}`)})
	if _, err := v.VerifyLoginProof(context.Background(), rec, third); protocol.CodeOf(err) != protocol.CodeWrongSession {
		t.Fatalf("a proof for another subject: %v", err)
	}
}

func FuzzVerifyLoginProof(f *testing.F) {
	rec, _, proof, clock := loginFixture(f)
	f.Add(proof)
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := protocol.NewVerifier(protocol.VerifierConfig{Now: clock})
		m, err := v.VerifyLoginProof(context.Background(), rec, frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if m.Subject != rec.Subject {
			t.Fatalf("accepted a proof for another subject: %+v", m)
		}
	})
}
