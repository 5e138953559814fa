package server_test

import (
	"encoding/json"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

// TestResentFrameAnsweredAsFirst: a pub frame sent again byte for byte,
// on a new connection of the session, is answered {"duplicate": true}
// and not delivered again; a dm refused the first time is refused the
// same way; a frame the server never saw, older than the session's last
// seq, is replay_seq.
func TestResentFrameAnsweredAsFirst(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.login("alice").connect()
	alice.subSince("rooms.dup", nil)
	bob := e.login("bob").connect()
	pub := bob.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.dup", Corr: "p1", Body: json.RawMessage(`{"n":1}`)})
	dm := bob.sign(&protocol.Envelope{Action: protocol.ActDM, To: "nobody", Corr: "d1", Body: json.RawMessage(`{"n":2}`)})
	never := bob.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.dup", Corr: "p2", Body: json.RawMessage(`{"n":3}`)})
	bob.write(pub)
	if m := bob.recvAct(protocol.ActReply); m.Corr != "p1" || string(m.Body) != `{}` {
		t.Fatalf("first answer %s %s", m.Corr, m.Body)
	}
	bob.write(dm)
	bob.expectError(protocol.CodeNotFound)
	alice.recvAct(protocol.ActDeliver)

	bob.ws.Close()
	bob.connect() // the session's next hello: seq above all three
	bob.write(pub)
	m := bob.recvAct(protocol.ActReply)
	var db protocol.DuplicateBody
	must(t, protocol.DecodeBody(m.Body, &db))
	if m.Corr != "p1" || !db.Duplicate {
		t.Fatalf("answer to the copy: %s %s", m.Corr, m.Body)
	}
	bob.write(dm)
	if eb := bob.expectError(protocol.CodeNotFound); eb.Ref == "" {
		t.Fatal("no ref")
	}
	bob.write(never)
	bob.expectError(protocol.CodeReplaySeq)
	// Nothing was delivered twice: the next deliver alice sees is a new one.
	bob.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.dup", Corr: "p4", Body: json.RawMessage(`{"n":4}`)})
	n, _ := alice.openPositioned(alice.recvAct(protocol.ActDeliver))
	if n != 4 {
		t.Fatalf("alice got %d", n)
	}
}
