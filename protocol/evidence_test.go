package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// flip changes one character of the part'th dot-separated segment.
func flip(frame []byte, part int) []byte {
	parts := strings.Split(string(frame), ".")
	seg := []byte(parts[part])
	i := len(seg) / 2
	if seg[i] == 'A' {
		seg[i] = 'B'
	} else {
		seg[i] = 'A'
	}
	parts[part] = string(seg)
	return []byte(strings.Join(parts, "."))
}

func TestVerifyEvidence(t *testing.T) {
	f := newFixture(t, "EdDSA")
	jwk, err := f.client.Public().MarshalJSON()
	must(t, err)
	frame, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{"text":"I said this"}`)})
	must(t, err)

	// Long after the token expired, the chain still verifies offline.
	ev, err := protocol.VerifyEvidence(f.keys, f.token, jwk, frame)
	must(t, err)
	if ev.Subject != "alice" || ev.Token.Session != f.claims.Session || ev.Message.Channel != "rooms.a" ||
		string(ev.Message.Body) != `{"text":"I said this"}` || string(ev.Message.Frame) != string(frame) ||
		ev.Key.Thumbprint() != f.claims.Confirm.JKT {
		t.Fatalf("evidence %+v %+v", ev, ev.Message)
	}

	other, err := protocol.KeyFromSeed(protocol.EdDSA, "mallory", "")
	must(t, err)
	otherJWK, _ := other.Public().MarshalJSON()
	otherSigned, err := (&protocol.ClientSigner{Key: other, Session: f.claims.Session, Subject: "alice"}).Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{}`)})
	must(t, err)
	wrongSession, err := (&protocol.ClientSigner{Key: f.client, Session: "00000000-0000-4000-8000-000000000000", Subject: "alice"}).Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{}`)})
	must(t, err)
	foreignKeys, _ := protocol.NewKeySet(other.Public())
	for _, c := range []struct {
		name  string
		keys  *protocol.KeySet
		token string
		jwk   []byte
		frame []byte
		code  protocol.Code
	}{
		{"token signed by a key not in the JWKS", foreignKeys, f.token, jwk, frame, protocol.CodeBadToken},
		{"tampered token", f.keys, string(flip([]byte(f.token), 1)), jwk, frame, protocol.CodeBadToken},
		{"another key than cnf.jkt", f.keys, f.token, otherJWK, otherSigned, protocol.CodeKeyMismatch},
		{"frame signed by another key", f.keys, f.token, jwk, otherSigned, protocol.CodeUnknownKey},
		{"tampered payload", f.keys, f.token, jwk, flip(frame, 1), protocol.CodeBadSignature},
		{"tampered signature", f.keys, f.token, jwk, flip(frame, 2), protocol.CodeBadSignature},
		{"frame of another session", f.keys, f.token, jwk, wrongSession, protocol.CodeWrongSession},
		{"token given as the frame", f.keys, f.token, jwk, []byte(f.token), protocol.CodeBadTyp},
	} {
		_, err := protocol.VerifyEvidence(c.keys, c.token, c.jwk, c.frame)
		if got := protocol.CodeOf(err); got != c.code {
			t.Errorf("%s: code %q (%v), want %q", c.name, got, err, c.code)
		}
	}
}

func TestVerifyDeliveryEvidence(t *testing.T) {
	f := newFixture(t, "ES256")
	jwk, _ := f.client.Public().MarshalJSON()
	inner, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{"text":"hi"}`)})
	must(t, err)
	ss := &protocol.ServerSigner{Key: f.server, Now: func() time.Time { return f.now }}
	deliver := func(sub, ch string) []byte {
		fr, err := ss.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: ch}, protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: sub})
		must(t, err)
		return fr
	}
	d := deliver("alice", "rooms.a")
	ev, err := protocol.VerifyDeliveryEvidence(f.keys, d)
	must(t, err)
	if ev.Subject != "alice" || ev.FromServer || ev.Delivery.Action != protocol.ActDeliver || string(ev.Message.Frame) != string(inner) || string(ev.Message.Body) != `{"text":"hi"}` {
		t.Fatalf("evidence %+v", ev)
	}
	other, _ := protocol.KeyFromSeed(protocol.EdDSA, "other-server", "other-1")
	otherKeys, _ := protocol.NewKeySet(other.Public())
	for _, c := range []struct {
		name  string
		keys  *protocol.KeySet
		frame []byte
		code  protocol.Code
	}{
		{"another server's JWKS", otherKeys, d, protocol.CodeUnknownKey},
		{"tampered delivery", f.keys, flip(d, 1), protocol.CodeBadSignature},
		{"server vouches for another sub", f.keys, deliver("bob", "rooms.a"), protocol.CodeWrongSession},
		{"delivered to another channel", f.keys, deliver("alice", "rooms.b"), protocol.CodeWrongSession},
		{"a client frame, not a delivery", f.keys, inner, protocol.CodeBadTyp},
	} {
		_, err := protocol.VerifyDeliveryEvidence(c.keys, c.frame)
		if got := protocol.CodeOf(err); got != c.code {
			t.Errorf("%s: code %q (%v), want %q", c.name, got, err, c.code)
		}
	}
}
