package vectors

import (
	"encoding/json"
	"strings"

	"github.com/sigil-ws/sigil/protocol"
)

// specVectors pin down points of spec.md that an implementer asked about:
// the action-name grammar (§6.5), the fields of built-in actions and
// bad_request (§9.1, §9.5), and what "jwk equal to that key" means for a
// server-published delivery (§10.3).
func (g *gen) specVectors() {
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	sess := g.sessionOf(alice)
	accepted := []Accepted{{SID: sess.SID, ID: g.uuid(), Seq: 1, TS: NowMS - 1000}}
	alice.signer.SetSeq(1)
	add := func(name, comment string, frame string, exp Expect) {
		g.add(Vector{Name: name, Kind: "client", Comment: comment, Session: sess, Accepted: accepted, Frame: frame, Expect: exp})
	}
	priv := edPriv(alice.key)
	h := hdr("EdDSA", alice.key.Public().Thumbprint(), protocol.TypClient)
	frame := func(mod func(e *protocol.Envelope)) string {
		e := &protocol.Envelope{ID: g.uuid(), TS: NowMS, Seq: 2, Session: sess.SID, Subject: "alice", Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi"}`)}
		mod(e)
		return rawJWS(priv, h, payload(e))
	}

	// §6.5: an action name is dot-separated segments of [a-z0-9_-]; the
	// first starts with a lowercase letter; at most 64 bytes.
	for _, c := range []struct{ name, act, comment string }{
		{"empty-segment", "orders..create", "an empty segment between two dots"},
		{"trailing-dot", "orders.", "a trailing dot"},
		{"leading-dot", ".orders", "a leading dot"},
		{"leading-digit", "1orders.create", "the first segment starts with a digit"},
		{"leading-dash", "-orders.create", "the first segment starts with -"},
		{"upper-segment", "orders.Create", "an upper-case letter in a later segment"},
		{"too-long", "orders." + strings.Repeat("x", 58), "65 bytes, over the limit of 64"},
	} {
		add("client-claims-action-"+c.name, "act "+c.comment+": not an action name (§6.5)", frame(func(e *protocol.Envelope) { e.Action, e.Channel = c.act, "" }), fail(protocol.CodeBadClaims))
	}
	add("client-action-digit-segment", "act \"orders.1st\": a later segment may start with a digit, so the claims are valid and the policy decides (forbidden)",
		frame(func(e *protocol.Envelope) { e.Action, e.Channel = "orders.1st", "" }), fail(protocol.CodeForbidden))
	add("client-action-max-length", "an action name of exactly 64 bytes is valid; the policy decides (forbidden)",
		frame(func(e *protocol.Envelope) { e.Action, e.Channel = "orders."+strings.Repeat("x", 57), "" }), fail(protocol.CodeForbidden))
	add("client-claims-channel-empty-segment", "ch with an empty segment (§6.5)", frame(func(e *protocol.Envelope) { e.Channel = "rooms..lobby" }), fail(protocol.CodeBadClaims))

	// §9.1, §9.5: a built-in action carries exactly the fields of its row;
	// anything else is bad_request, after the frame was accepted.
	for _, c := range []struct {
		name, comment string
		mod           func(e *protocol.Envelope)
	}{
		{"ping-with-body", "a ping that carries a body", func(e *protocol.Envelope) { e.Action, e.Channel, e.Body = protocol.ActPing, "", json.RawMessage(`{}`) }},
		{"ping-with-ch", "a ping that carries ch", func(e *protocol.Envelope) { e.Action, e.Body = protocol.ActPing, nil }},
		{"sub-with-body", "a sub that carries a body", func(e *protocol.Envelope) { e.Action = protocol.ActSub }},
		{"presence-with-to", "a presence that carries to", func(e *protocol.Envelope) { e.Action, e.To, e.Body = protocol.ActPresence, "bob", nil }},
		{"pub-without-body", "a pub without body or enc", func(e *protocol.Envelope) { e.Body = nil }},
		{"pub-with-to", "a pub that carries to", func(e *protocol.Envelope) { e.To = "bob" }},
		{"dm-with-ch", "a dm that carries ch", func(e *protocol.Envelope) { e.Action, e.To = protocol.ActDM, "bob" }},
		{"dm-without-to", "a dm without to", func(e *protocol.Envelope) { e.Action, e.Channel = protocol.ActDM, "" }},
		{"refresh-with-ch", "a refresh that carries ch", func(e *protocol.Envelope) {
			e.Action, e.Body = protocol.ActRefresh, json.RawMessage(`{"refresh_token":"c3JlZnJlc2g"}`)
		}},
		{"hello-after-welcome", "a hello after the handshake (§7 step 5)", func(e *protocol.Envelope) {
			e.Action, e.Channel, e.Body = protocol.ActHello, "", json.RawMessage(`{"token":"`+alice.token+`","jwk":`+string(mustJSON(alice.key.Public()))+`}`)
		}},
	} {
		add("client-bad-request-"+c.name, c.comment+": bad_request", frame(c.mod), fail(protocol.CodeBadRequest))
	}

	// §10.3: the jwk of a server-published delivery is "equal" to the JWKS
	// key when their RFC 7638 thumbprints are equal: kid, alg and use may
	// differ or be absent.
	bob := g.identity("bob", []string{"user"}, "bob-eddsa")
	inner := g.serverSign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"from the server"}`)})
	bare := jwkVariant(g.srv, map[string]any{"kid": nil, "alg": nil, "use": nil})
	d := g.serverSign(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.lobby", Body: mustJSON(protocol.DeliverBody{Frame: inner, JWK: bare, Sub: protocol.ServerSubject})})
	g.add(Vector{Name: "delivery-server-published-bare-jwk-ok", Kind: "delivery", Comment: "a server-published delivery whose jwk is the JWKS key without kid, alg and use: equal by thumbprint",
		Client: &ClientState{SID: bob.claims.Session, Sub: "bob"}, Frame: d,
		Expect: Expect{Result: "ok", Claims: json.RawMessage(claimsOf(d)), Sender: &ExpectSender{Sub: protocol.ServerSubject, Claims: json.RawMessage(claimsOf(inner)), Body: json.RawMessage(`{"text":"from the server"}`)}}})
}
