package protocol_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, alg := range []string{"EdDSA", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, alg)
			s := f.hello(t)
			if s.Subject() != "alice" || s.ID() != f.claims.Session {
				t.Fatalf("session = %+v", s)
			}
			env := &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: []byte(`{"text":"hi"}`)}
			frame, err := f.signer.Sign(env)
			must(t, err)
			m, err := f.verifier.Verify(context.Background(), frame, s)
			must(t, err)
			if string(m.Body) != `{"text":"hi"}` || m.Seq != 2 {
				t.Fatalf("message = %+v", m)
			}
			// exact replay
			_, err = f.verifier.Verify(context.Background(), frame, s)
			if protocol.CodeOf(err) != protocol.CodeReplayID {
				t.Fatalf("replay: got %v", err)
			}
		})
	}
}

// A Session comes only from protocol: one made elsewhere (its zero value,
// the only one other packages can write) verifies nothing and refreshes
// nothing, and the roles and key it hands out are copies.
func TestSessionOnlyFromProtocol(t *testing.T) {
	f := newFixture(t, "EdDSA")
	s := f.hello(t)
	frame, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPing})
	must(t, err)
	if _, err := f.verifier.Verify(context.Background(), frame, &protocol.Session{}); protocol.CodeOf(err) != protocol.CodeInternal {
		t.Fatalf("Verify with a hand-made session: %v, want internal", err)
	}
	if err := f.verifier.Refresh(context.Background(), &protocol.Session{}, f.token); protocol.CodeOf(err) != protocol.CodeInternal {
		t.Fatalf("Refresh of a hand-made session: %v, want internal", err)
	}
	s.Roles()[0] = "admin"
	s.JWK()[0] = 'x'
	if s.Roles()[0] != "user" || s.JWK()[0] != '{' {
		t.Fatal("a Session's roles or jwk changed through what it returned")
	}
	if _, err := f.verifier.Verify(context.Background(), frame, s); err != nil {
		t.Fatal(err)
	}
}

// spec.md §7 step 8: the replay state is written only by frames whose
// signature verified, so a forged frame with a huge seq cannot lock the
// session out.
func TestReplayStateOnlyAfterSignature(t *testing.T) {
	f := newFixture(t, "EdDSA")
	s := f.hello(t)
	mallory, err := protocol.KeyFromSeed(protocol.EdDSA, "mallory", f.client.KeyID())
	must(t, err)
	forger := &protocol.ClientSigner{Key: mallory, Session: s.ID(), Subject: "alice", Now: f.signer.Now}
	forger.SetSeq(1 << 40)
	forged, err := forger.Sign(&protocol.Envelope{Action: protocol.ActPing})
	must(t, err)
	if _, err := f.verifier.Verify(context.Background(), forged, s); protocol.CodeOf(err) != protocol.CodeBadSignature {
		t.Fatalf("forged frame: %v", err)
	}
	good, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPing})
	must(t, err)
	if _, err := f.verifier.Verify(context.Background(), good, s); err != nil {
		t.Fatalf("the real client is locked out after a forged frame: %v", err)
	}
}

// A rejected frame changes nothing: the next valid frame is accepted, and
// each error carries the offending id once claims were decoded.
func TestRejectionLeavesSessionUsable(t *testing.T) {
	f := newFixture(t, "ES256")
	s := f.hello(t)
	ctx := context.Background()
	forbidden, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "announce.news", Body: []byte(`{}`)})
	must(t, err)
	_, err = f.verifier.Verify(ctx, forbidden, s)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeForbidden || pe.Ref == "" {
		t.Fatalf("forbidden: %#v", err)
	}
	hello2, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActHello, Body: []byte(`{}`)})
	must(t, err)
	if _, err := f.verifier.Verify(ctx, hello2, s); protocol.CodeOf(err) != protocol.CodeBadRequest {
		t.Fatalf("second hello: %v", err)
	}
	ok, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: []byte(`{"a":1}`)})
	must(t, err)
	if _, err := f.verifier.Verify(ctx, ok, s); err != nil {
		t.Fatalf("valid frame after rejections: %v", err)
	}
}
