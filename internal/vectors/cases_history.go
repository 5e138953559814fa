package vectors

import (
	"encoding/json"

	"github.com/sigil-ws/sigil/protocol"
)

// historyVectors: stream positions in deliver frames, sub with since,
// the history action, and the history frame (spec.md §20).
func (g *gen) historyVectors() {
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	sess := g.sessionOf(alice, g.chKey, g.aliceKey)
	accepted := []Accepted{{SID: sess.SID, ID: g.uuid(), Seq: 1, TS: NowMS - 1000}}
	alice.signer.SetSeq(1)
	client := func(name, comment string, env *protocol.Envelope, exp func(f string) Expect) {
		f := g.sign(alice, env)
		g.add(Vector{Name: name, Kind: "client", Comment: comment, Session: sess, Accepted: accepted, Frame: f, Expect: exp(f)})
	}
	okc := func(f string) Expect { return ok(claimsOf(f), bodyOf(f)) }
	badRequest := func(string) Expect { return fail(protocol.CodeBadRequest) }
	client("client-sub-since-ok", "a sub that asks for the publications after a position (§20.3)",
		&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby", Corr: "s-1", Body: json.RawMessage(`{"since":{"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":41}}`)}, okc)
	client("client-sub-since-zero-ok", "since offset 0: everything the stream keeps",
		&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby", Body: json.RawMessage(`{"since":{"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":0}}`)}, okc)
	client("client-bad-request-sub-since-extra", "a since with a member too many: bad_request",
		&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby", Body: json.RawMessage(`{"since":{"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":1,"x":1}}`)}, badRequest)
	client("client-bad-request-sub-since-bad-epoch", "an epoch outside the base64url alphabet: bad_request",
		&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby", Body: json.RawMessage(`{"since":{"epoch":"k3Jx0aQ+Tn/5b2Vw","offset":1}}`)}, badRequest)
	client("client-bad-request-sub-since-negative", "a negative offset: bad_request",
		&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby", Body: json.RawMessage(`{"since":{"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":-1}}`)}, badRequest)
	client("client-history-ok", "the last 20 messages of a room (§20.5)",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.lobby", Corr: "h-1", Body: json.RawMessage(`{"limit":20}`)}, okc)
	client("client-history-before-ok", "the messages before offset 100",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.lobby", Corr: "h-2", Body: json.RawMessage(`{"limit":50,"before":100}`)}, okc)
	client("client-history-no-body-ok", "history without a body: the server's default page",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.lobby", Corr: "h-3"}, okc)
	client("client-bad-request-history-before-and-after", "history with both before and after: bad_request",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.lobby", Body: json.RawMessage(`{"before":10,"after":2}`)}, badRequest)
	client("client-bad-request-history-limit", "a limit over 1000: bad_request",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.lobby", Body: json.RawMessage(`{"limit":1001}`)}, badRequest)
	client("client-history-inbox-ok", "a page of the session's own user's inbox: to, no ch (§20.11)",
		&protocol.Envelope{Action: protocol.ActHistory, To: "alice", Corr: "h-4", Body: json.RawMessage(`{"limit":10}`)}, okc)
	client("client-history-inbox-forbidden", "another user's inbox is never readable: forbidden",
		&protocol.Envelope{Action: protocol.ActHistory, To: "bob"}, func(string) Expect { return fail(protocol.CodeForbidden) })
	client("client-bad-request-history-ch-and-to", "history with both ch and to: bad_request",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.lobby", To: "alice"}, badRequest)
	client("client-history-forbidden", "the policy grants no history of private channels",
		&protocol.Envelope{Action: protocol.ActHistory, Channel: "private.ops"}, func(string) Expect { return fail(protocol.CodeForbidden) })

	// Deliveries with positions.
	bob := g.identity("bob", []string{"user"}, "bob-eddsa")
	cs := &ClientState{SID: bob.claims.Session, Sub: "bob", ContentKeys: ckOf(g.chKey, g.bobKey)}
	jwk, _ := alice.key.Public().MarshalJSON()
	pub := g.sign(alice, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"kept"}`)})
	positioned := func(act, ch, to, body string) string {
		return g.serverSign(&protocol.Envelope{Action: act, Channel: ch, To: to, Body: json.RawMessage(body)})
	}
	db := func(extra string) string {
		return `{"frame":"` + pub + `","jwk":` + string(jwk) + `,"sub":"alice"` + extra + `}`
	}
	delivery := func(name, comment, frame string, exp Expect) {
		g.add(Vector{Name: name, Kind: "delivery", Comment: comment, Client: cs, Frame: frame, Expect: exp})
	}
	d := positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":42`))
	delivery("delivery-position-ok", "a deliver frame of a channel with history carries its position in its signed body (§20.1)", d,
		Expect{Result: "ok", Claims: json.RawMessage(claimsOf(d)), Sender: &ExpectSender{Sub: "alice", Claims: json.RawMessage(claimsOf(pub)), Body: json.RawMessage(`{"text":"kept"}`)}})
	delivery("delivery-position-epoch-only", "an epoch without an offset", positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"epoch":"k3Jx0aQ-Tn_5b2Vw"`)), fail(protocol.CodeBadClaims))
	delivery("delivery-position-offset-zero", "offset 0 is no publication's", positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":0`)), fail(protocol.CodeBadClaims))
	delivery("delivery-position-bad-epoch", "an epoch of 65 characters", positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"epoch":"`+string(make65())+`","offset":1`)), fail(protocol.CodeBadClaims))
	dm := g.sign(alice, &protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`{"text":"psst"}`)})
	sd := positioned(protocol.ActDirect, "", "bob", `{"frame":"`+dm+`","jwk":`+string(jwk)+`,"sub":"alice","epoch":"Yb2_inbox-Q7x","offset":7}`)
	delivery("delivery-position-on-direct-ok", "a direct frame of a dm stored in the recipient's inbox stream carries its position in its signed body (§20.11)", sd,
		Expect{Result: "ok", Claims: json.RawMessage(claimsOf(sd)), Sender: &ExpectSender{Sub: "alice", Claims: json.RawMessage(claimsOf(dm)), Body: json.RawMessage(`{"text":"psst"}`)}})
	delivery("delivery-position-on-direct-offset-only", "a direct frame with an offset and no epoch",
		positioned(protocol.ActDirect, "", "bob", `{"frame":"`+dm+`","jwk":`+string(jwk)+`,"sub":"alice","offset":7}`), fail(protocol.CodeBadClaims))
	// The history frame that follows a welcome to a hello with inbox_since.
	ih := g.serverSign(&protocol.Envelope{Action: protocol.ActHistory, Session: cs.SID, Corr: "hello-1", Body: mustJSON(protocol.HistoryBody{Frames: []string{sd}})})
	g.add(Vector{Name: "server-history-inbox-ok", Kind: "server", Comment: "an inbox history frame: stored direct frames to the session's user, no ch (§20.11)", Client: cs, Frame: ih, Expect: ok(claimsOf(ih), bodyOf(ih))})

	// The history frame that follows a recovering sub's reply.
	hf := g.serverSign(&protocol.Envelope{Action: protocol.ActHistory, Session: cs.SID, Channel: "rooms.lobby", Corr: "s-1", Body: mustJSON(protocol.HistoryBody{Frames: []string{d}})})
	g.add(Vector{Name: "server-history-ok", Kind: "server", Comment: "a history frame: stored deliver frames, byte for byte, for one session (§20.3)", Client: cs, Frame: hf, Expect: ok(claimsOf(hf), bodyOf(hf))})
	rp := g.serverSign(&protocol.Envelope{Action: protocol.ActReply, Session: cs.SID, Channel: "rooms.lobby", Corr: "s-1",
		Body: json.RawMessage(`{"members":["alice","bob"],"stream":{"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":42},"recovered":true}`)})
	g.add(Vector{Name: "server-sub-reply-recovered-ok", Kind: "server", Comment: "the reply to a sub with since: the stream's position, and recovered", Client: cs, Frame: rp, Expect: ok(claimsOf(rp), bodyOf(rp))})

	// Deliveries with the audit log index of a synchronous log (§21.3).
	d = positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"epoch":"k3Jx0aQ-Tn_5b2Vw","offset":42,"log_index":7`))
	delivery("delivery-log-index-ok", "a deliver frame with its position and its audit log index (§21.3)", d,
		Expect{Result: "ok", Claims: json.RawMessage(claimsOf(d)), Sender: &ExpectSender{Sub: "alice", Claims: json.RawMessage(claimsOf(pub)), Body: json.RawMessage(`{"text":"kept"}`)}})
	d = positioned(protocol.ActDirect, "", "bob", `{"frame":"`+dm+`","jwk":`+string(jwk)+`,"sub":"alice","log_index":8}`)
	delivery("delivery-direct-log-index-ok", "a direct frame with the dm's audit log index (§21.3)", d,
		Expect{Result: "ok", Claims: json.RawMessage(claimsOf(d)), Sender: &ExpectSender{Sub: "alice", Claims: json.RawMessage(claimsOf(dm)), Body: json.RawMessage(`{"text":"psst"}`)}})
	delivery("delivery-log-index-negative", "a log_index is a non-negative integer", positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"log_index":-1`)), fail(protocol.CodeBadClaims))
	delivery("delivery-log-index-too-large", "a log_index is at most 2^53-1", positioned(protocol.ActDeliver, "rooms.lobby", "", db(`,"log_index":9007199254740992`)), fail(protocol.CodeBadClaims))
}

func make65() []byte {
	b := make([]byte, 65)
	for i := range b {
		b[i] = 'a'
	}
	return b
}
