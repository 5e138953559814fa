package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

// TestVerifyStored: a stored deliver frame verifies with its position; an
// edited one, one for another channel, one without a position, and
// another kind of server frame slipped into a history are rejected.
func TestVerifyStored(t *testing.T) {
	sk, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := protocol.NewKeySet(sk.Public())
	if err != nil {
		t.Fatal(err)
	}
	ss := &protocol.ServerSigner{Key: sk}
	ck, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	cs := &protocol.ClientSigner{Key: ck, Session: "00000000-0000-4000-8000-000000000001", Subject: "alice"}
	inner, _ := cs.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{"text":"kept"}`)})
	jwk, _ := ck.Public().MarshalJSON()
	deliver := func(ch string, db protocol.DeliverBody) []byte {
		f, err := ss.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: ch}, db)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	fv := &protocol.FrameVerifier{Keys: ks}
	good := deliver("rooms.a", protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "alice", Epoch: "e1", Offset: 7})
	sd, err := fv.VerifyStored(good, "rooms.a")
	if err != nil || sd.Position != (protocol.Position{Epoch: "e1", Offset: 7}) {
		t.Fatalf("good: %v %v", sd, err)
	}
	if _, m, err := protocol.OpenDelivery(sd.Message, nil); err != nil || string(m.Body) != `{"text":"kept"}` {
		t.Fatalf("open: %v", err)
	}
	seg := strings.Split(string(good), ".")
	b := []byte(seg[1])
	b[10] ^= 1
	edited := seg[0] + "." + string(b) + "." + seg[2]
	join, _ := ss.SignBody(&protocol.Envelope{Action: protocol.ActJoin, Channel: "rooms.a"}, protocol.JoinBody{Sub: "mallory"})
	for name, tc := range map[string]struct {
		frame []byte
		ch    string
		code  protocol.Code
	}{
		"edited":          {[]byte(edited), "rooms.a", ""},
		"other channel":   {good, "rooms.b", protocol.CodeWrongSession},
		"no position":     {deliver("rooms.a", protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "alice"}), "rooms.a", protocol.CodeBadClaims},
		"half a position": {deliver("rooms.a", protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "alice", Epoch: "e1"}), "rooms.a", protocol.CodeBadClaims},
		"a join":          {join, "rooms.a", protocol.CodeWrongSession},
		"rogue signer": {func() []byte {
			k, _ := protocol.GenerateKey(protocol.EdDSA, nil)
			f, _ := (&protocol.ServerSigner{Key: k}).Sign(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.a"})
			return f
		}(), "rooms.a", protocol.CodeUnknownKey},
	} {
		_, err := fv.VerifyStored(tc.frame, tc.ch)
		if err == nil || (tc.code != "" && !protocol.IsCode(err, tc.code)) {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
}

// TestVerifyStoredDirect: a stored direct frame of the inbox (spec.md
// §20.11) verifies with its position; an edited one, one to another user,
// one without a position, a deliver frame, and a rogue signer's are
// rejected.
func TestVerifyStoredDirect(t *testing.T) {
	sk, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	ks, err := protocol.NewKeySet(sk.Public())
	if err != nil {
		t.Fatal(err)
	}
	ss := &protocol.ServerSigner{Key: sk}
	ck, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	cs := &protocol.ClientSigner{Key: ck, Session: "00000000-0000-4000-8000-000000000001", Subject: "alice"}
	inner, _ := cs.Sign(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`{"text":"psst"}`)})
	jwk, _ := ck.Public().MarshalJSON()
	direct := func(act, ch, to string, db protocol.DeliverBody) []byte {
		f, err := ss.SignBody(&protocol.Envelope{Action: act, Channel: ch, To: to}, db)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	at := protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "alice", Epoch: "e1", Offset: 3}
	fv := &protocol.FrameVerifier{Keys: ks}
	good := direct(protocol.ActDirect, "", "bob", at)
	sd, err := fv.VerifyStoredDirect(good, "bob")
	if err != nil || sd.Position != (protocol.Position{Epoch: "e1", Offset: 3}) {
		t.Fatalf("good: %v %v", sd, err)
	}
	if snd, m, err := protocol.OpenDelivery(sd.Message, nil); err != nil || snd.Subject != "alice" || string(m.Body) != `{"text":"psst"}` {
		t.Fatalf("open: %v", err)
	}
	seg := strings.Split(string(good), ".")
	b := []byte(seg[1])
	b[12] ^= 1
	rogue, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	rf, _ := (&protocol.ServerSigner{Key: rogue}).SignBody(&protocol.Envelope{Action: protocol.ActDirect, To: "bob"}, at)
	for name, tc := range map[string]struct {
		frame []byte
		to    string
		code  protocol.Code
	}{
		"edited":         {[]byte(seg[0] + "." + string(b) + "." + seg[2]), "bob", ""},
		"another user's": {good, "carol", protocol.CodeWrongSession},
		"no position":    {direct(protocol.ActDirect, "", "bob", protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "alice"}), "bob", protocol.CodeBadClaims},
		"a deliver":      {direct(protocol.ActDeliver, "rooms.a", "", at), "bob", protocol.CodeWrongSession},
		"rogue signer":   {rf, "bob", protocol.CodeUnknownKey},
		"no recipient":   {good, "", protocol.CodeWrongSession},
	} {
		_, err := fv.VerifyStoredDirect(tc.frame, tc.to)
		if err == nil || (tc.code != "" && !protocol.IsCode(err, tc.code)) {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
	// VerifyLate takes a direct frame to the verifier's own subject only.
	if sd, err := (&protocol.FrameVerifier{Keys: ks, Subject: "bob"}).VerifyLate(good); err != nil || sd.Position.Offset != 3 {
		t.Fatalf("late direct: %v", err)
	}
	for _, sub := range []string{"carol", ""} {
		if _, err := (&protocol.FrameVerifier{Keys: ks, Subject: sub}).VerifyLate(good); !protocol.IsCode(err, protocol.CodeWrongSession) {
			t.Errorf("late direct to bob, verifier of %q: %v", sub, err)
		}
	}
}
