package vectors

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/sigil-ws/sigil/protocol"
)

func (g *gen) serverVectors() {
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	cs := &ClientState{SID: alice.claims.Session, Sub: "alice"}
	add := func(name, comment, frame string, exp Expect) {
		g.add(Vector{Name: name, Kind: "server", Comment: comment, Client: cs, Frame: frame, Expect: exp})
	}
	valid := func(name, comment string, env *protocol.Envelope) {
		f := g.serverSign(env)
		add(name, comment, f, ok(claimsOf(f), bodyOf(f)))
	}
	valid("server-welcome-ok", "welcome", &protocol.Envelope{Action: protocol.ActWelcome, Session: cs.SID, Body: mustJSON(protocol.WelcomeBody{
		Session: cs.SID, Subject: "alice", Roles: []string{"user"}, Expiry: alice.claims.Expiry * 1000, Time: NowMS, Skew: SkewMS, Window: SkewMS, LastSeq: 1, MaxFrame: MaxFrame,
		Grants: protocol.Grants{{Action: protocol.ActPing}, {Action: protocol.ActDM}, {Action: protocol.ActPub, Channel: "rooms.>"}}})})
	valid("server-error-ok", "an error frame", &protocol.Envelope{Action: protocol.ActError, Session: cs.SID, Corr: "c-7", Body: mustJSON(protocol.ErrorBody{Code: protocol.CodeForbidden, Message: "no", Ref: g.uuid()})})
	valid("server-reply-ok", "a reply", &protocol.Envelope{Action: protocol.ActReply, Session: cs.SID, Corr: "c-8", Body: json.RawMessage(`{"members":["alice","bob"]}`)})
	valid("server-join-ok", "a presence broadcast names no session", &protocol.Envelope{Action: protocol.ActJoin, Channel: "rooms.lobby", Body: json.RawMessage(`{"sub":"bob"}`)})
	valid("server-pong-ok", "pong", &protocol.Envelope{Action: protocol.ActPong, Session: cs.SID})
	es := &protocol.ServerSigner{Key: g.srvES, Now: g.clock, Rand: g.rnd}
	esf, _ := es.Sign(&protocol.Envelope{Action: protocol.ActPong, Session: cs.SID})
	add("server-ok-es256-key", "signed by the JWKS's ES256 key", string(esf), ok(claimsOf(string(esf)), nil))

	base := func() *protocol.Envelope {
		return &protocol.Envelope{ID: g.uuid(), TS: NowMS, Action: protocol.ActPong, Session: cs.SID}
	}
	priv := edPriv(g.srv)
	h := hdr("EdDSA", "sigil-test-1", protocol.TypServer)
	add("server-typ-client", "a client typ on a server frame", rawJWS(priv, hdr("EdDSA", "sigil-test-1", protocol.TypClient), payload(base())), fail(protocol.CodeBadTyp))
	add("server-alg-none", `alg "none"`, b64.EncodeToString([]byte(hdr("none", "sigil-test-1", protocol.TypServer)))+"."+b64.EncodeToString([]byte(payload(base())))+".", fail(protocol.CodeBadHeader))
	add("server-alg-mismatch", "alg ES256 on the Ed25519 key's kid", rawJWS(priv, hdr("ES256", "sigil-test-1", protocol.TypServer), payload(base())), fail(protocol.CodeBadHeader))
	add("server-unknown-kid", "kid not in the JWKS", rawJWS(priv, hdr("EdDSA", "sigil-test-9", protocol.TypServer), payload(base())), fail(protocol.CodeUnknownKey))
	add("server-rogue-key", "right kid, signed by a key that is not the JWKS key", rawJWS(edPriv(g.rogue), h, payload(base())), fail(protocol.CodeBadSignature))
	f := rawJWS(priv, h, payload(base()))
	p := strings.Split(f, ".")
	add("server-signature-bit-flip", "one bit of the signature flipped", p[0]+"."+p[1]+"."+flip(p[2], 5), fail(protocol.CodeBadSignature))
	rep := base()
	g.add(Vector{Name: "server-replay-id", Kind: "server", Comment: "a server frame whose id the client already received", Client: &ClientState{SID: cs.SID, Sub: "alice", Seen: []string{rep.ID}}, Frame: rawJWS(priv, h, payload(rep)), Expect: fail(protocol.CodeReplayID)})
	st := base()
	st.TS = NowMS - SkewMS - 1
	add("server-stale", "a stale server frame", rawJWS(priv, h, payload(st)), fail(protocol.CodeStale))
	fu := base()
	fu.TS = NowMS + SkewMS + 1
	add("server-future", "a server frame from the future", rawJWS(priv, h, payload(fu)), fail(protocol.CodeFuture))
	ws := base()
	ws.Session = g.uuid()
	add("server-wrong-session", "a frame for another session", rawJWS(priv, h, payload(ws)), fail(protocol.CodeWrongSession))
	ns := base()
	ns.Session = ""
	add("server-no-session", "a per-session action without sid", rawJWS(priv, h, payload(ns)), fail(protocol.CodeWrongSession))
	sq := base()
	sq.Seq = 3
	add("server-claims-seq", "server frames carry no seq", rawJWS(priv, h, payload(sq)), fail(protocol.CodeBadClaims))
	sb := base()
	sb.Subject = "alice"
	add("server-claims-sub", "server frames carry no sub", rawJWS(priv, h, payload(sb)), fail(protocol.CodeBadClaims))
	hello := g.serverSign(&protocol.Envelope{Action: protocol.ActError, Body: mustJSON(protocol.ErrorBody{Code: protocol.CodeBadToken, Message: "session token: signed by an unknown key", Ref: g.uuid()})})
	add("server-error-before-welcome-ok", "the error answering a rejected hello names no session; it is accepted before welcome", hello, ok(claimsOf(hello), bodyOf(hello)))
	late := g.serverSign(&protocol.Envelope{Action: protocol.ActError, Body: mustJSON(protocol.ErrorBody{Code: protocol.CodeForbidden, Message: "no"})})
	g.add(Vector{Name: "server-error-no-sid-after-welcome", Kind: "server", Comment: "after welcome, an error frame must name the session", Client: &ClientState{SID: cs.SID, Sub: "alice", Welcomed: true}, Frame: late, Expect: fail(protocol.CodeWrongSession)})
	add("server-claims-duplicate", "a duplicate claim", rawJWS(priv, h, strings.Replace(payload(base()), `"act":"pong"`, `"act":"pong","act":"welcome"`, 1)), fail(protocol.CodeBadClaims))
}

// delivery builds a deliver (or direct) frame around a sender frame.
func (g *gen) delivery(act string, senderFrame string, sender *identity, ch, to, enc string) string {
	jwk, _ := sender.key.Public().MarshalJSON()
	return g.serverSign(&protocol.Envelope{Action: act, Channel: ch, To: to,
		Body: mustJSON(protocol.DeliverBody{Frame: senderFrame, JWK: jwk, Sub: sender.claims.Subject, Enc: enc})})
}

func (g *gen) deliveryVectors() {
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	aliceES := g.identity("alice", []string{"user"}, "alice-es256")
	bob := g.identity("bob", []string{"user"}, "bob-eddsa")
	cs := &ClientState{SID: bob.claims.Session, Sub: "bob", ContentKeys: ckOf(g.chKey, g.bobKey)}
	add := func(name, comment, frame string, exp Expect) {
		g.add(Vector{Name: name, Kind: "delivery", Comment: comment, Client: cs, Frame: frame, Expect: exp})
	}
	okd := func(d, s string, body json.RawMessage) Expect {
		return Expect{Result: "ok", Claims: json.RawMessage(claimsOf(d)), Sender: &ExpectSender{Sub: "alice", Claims: json.RawMessage(claimsOf(s)), Body: body}}
	}
	pub := g.sign(alice, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi bob"}`)})
	d := g.delivery(protocol.ActDeliver, pub, alice, "rooms.lobby", "", "")
	add("delivery-ok-eddsa", "a channel delivery of alice's Ed25519-signed publish", d, okd(d, pub, json.RawMessage(`{"text":"hi bob"}`)))
	pubES := g.sign(aliceES, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"from a browser"}`)})
	d = g.delivery(protocol.ActDeliver, pubES, aliceES, "rooms.lobby", "", "")
	add("delivery-ok-es256", "a channel delivery of a P-256-signed publish", d, okd(d, pubES, json.RawMessage(`{"text":"from a browser"}`)))
	encPub, _ := protocol.SealBody(g.chKey, []byte(`{"text":"sealed for the room"}`))
	pubEnc := g.sign(alice, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Enc: encPub})
	d = g.delivery(protocol.ActDeliver, pubEnc, alice, "rooms.lobby", "", "")
	add("delivery-ok-encrypted", "a channel delivery whose body is sealed with the channel key", d, okd(d, pubEnc, json.RawMessage(`{"text":"sealed for the room"}`)))
	dm := g.sign(alice, &protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`{"text":"psst"}`)})
	d = g.delivery(protocol.ActDirect, dm, alice, "", "bob", "")
	add("delivery-direct-ok", "a direct message to bob", d, okd(d, dm, json.RawMessage(`{"text":"psst"}`)))
	aliceSealed, _ := protocol.SealBody(g.aliceKey, []byte(`{"text":"psst, sealed"}`))
	dmEnc := g.sign(alice, &protocol.Envelope{Action: protocol.ActDM, To: "bob", Enc: aliceSealed})
	resealed, _ := protocol.SealBody(g.bobKey, []byte(`{"text":"psst, sealed"}`))
	d = g.delivery(protocol.ActDirect, dmEnc, alice, "", "bob", resealed)
	add("delivery-direct-enc-ok", "an encrypted direct message, re-sealed by the server with bob's session key", d, okd(d, dmEnc, json.RawMessage(`{"text":"psst, sealed"}`)))

	pp := strings.Split(pub, ".")
	tampered := pp[0] + "." + flip(pp[1], 30) + "." + pp[2]
	add("delivery-sender-tampered", "the sender's frame was altered: its signature fails though the server signed the delivery", g.delivery(protocol.ActDeliver, tampered, alice, "rooms.lobby", "", ""), fail(protocol.CodeBadSignature))
	mal := &identity{key: g.sess["mallory-eddsa"], claims: alice.claims}
	add("delivery-jwk-not-sender", "the enclosed jwk is not the key that signed the sender's frame", g.delivery(protocol.ActDeliver, pub, mal, "rooms.lobby", "", ""), fail(protocol.CodeUnknownKey))
	other := &identity{key: alice.key, claims: &protocol.SessionClaims{Subject: "carol"}}
	add("delivery-sub-mismatch", "the delivery names another sender", g.delivery(protocol.ActDeliver, pub, other, "rooms.lobby", "", ""), fail(protocol.CodeWrongSession))
	add("delivery-channel-mismatch", "a publish to one channel delivered as another channel's", g.delivery(protocol.ActDeliver, pub, alice, "rooms.other", "", ""), fail(protocol.CodeWrongSession))
	add("delivery-direct-to-other", "a direct frame for another user", g.delivery(protocol.ActDirect, dm, alice, "", "carol", ""), fail(protocol.CodeWrongSession))
	// Published by the server application itself: the inner frame is a
	// server frame signed by a JWKS key.
	srvJWK, _ := g.srv.Public().MarshalJSON()
	inner := g.serverSign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"maintenance at noon"}`)})
	sp := g.serverSign(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.lobby", Body: mustJSON(protocol.DeliverBody{Frame: inner, JWK: srvJWK, Sub: protocol.ServerSubject})})
	add("delivery-server-published-ok", "a message the server application published: the inner frame is a server frame", sp,
		Expect{Result: "ok", Claims: json.RawMessage(claimsOf(sp)), Sender: &ExpectSender{Sub: protocol.ServerSubject, Claims: json.RawMessage(claimsOf(inner)), Body: json.RawMessage(`{"text":"maintenance at noon"}`)}})
	malJWK, _ := g.sess["mallory-eddsa"].Public().MarshalJSON()
	spBad := g.serverSign(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.lobby", Body: mustJSON(protocol.DeliverBody{Frame: inner, JWK: malJWK, Sub: protocol.ServerSubject})})
	add("delivery-server-published-wrong-jwk", "a server-published delivery whose jwk is not the JWKS key that signed the inner frame", spBad, fail(protocol.CodeUnknownKey))
	tokFrame := g.delivery(protocol.ActDeliver, alice.token, alice, "rooms.lobby", "", "")
	add("delivery-sender-token-as-frame", "the sender frame is a session token", tokFrame, fail(protocol.CodeBadTyp))
}

func (g *gen) tokenVectors() {
	alice := g.identity("alice", []string{"user", "trader"}, "alice-eddsa")
	cb, _ := json.Marshal(alice.claims)
	g.add(Vector{Name: "token-ok", Kind: "token", Comment: "a valid session token", Frame: alice.token, Expect: Expect{Result: "ok", Claims: cb}})
	esTok, esClaims := g.issue("alice", []string{"user"}, alice.key, g.srvES, nil)
	eb, _ := json.Marshal(esClaims)
	g.add(Vector{Name: "token-ok-es256", Kind: "token", Comment: "a session token signed by the ES256 server key", Frame: esTok, Expect: Expect{Result: "ok", Claims: eb}})
	expTok, _ := g.issue("alice", nil, alice.key, g.srv, func(i *protocol.TokenIssuer) { i.TTL = 30 * 1e9 })
	g.add(Vector{Name: "token-expired", Kind: "token", Comment: "expired 30 seconds ago", Frame: expTok, Expect: fail(protocol.CodeTokenExpired)})
	issTok, _ := g.issue("alice", nil, alice.key, g.srv, func(i *protocol.TokenIssuer) { i.Issuer = "https://evil.test" })
	g.add(Vector{Name: "token-wrong-iss", Kind: "token", Comment: "another issuer", Frame: issTok, Expect: fail(protocol.CodeBadToken)})
	priv := edPriv(g.srv)
	c := string(cb)
	g.add(Vector{Name: "token-typ-jwt", Kind: "token", Comment: `typ "JWT" instead of the session typ`, Frame: rawJWS(priv, hdr("EdDSA", "sigil-test-1", "JWT"), c), Expect: fail(protocol.CodeBadToken)})
	g.add(Vector{Name: "token-claims-duplicate", Kind: "token", Comment: "a duplicate roles claim", Frame: rawJWS(priv, hdr("EdDSA", "sigil-test-1", protocol.TypSession), strings.Replace(c, `"roles":`, `"roles":["admin"],"roles":`, 1)), Expect: fail(protocol.CodeBadToken)})
	g.add(Vector{Name: "token-missing-cnf", Kind: "token", Comment: "no cnf: the token is not bound to a key", Frame: rawJWS(priv, hdr("EdDSA", "sigil-test-1", protocol.TypSession), strings.Replace(c, `,"cnf":{"jkt":"`+alice.claims.Confirm.JKT+`"}`, "", 1)), Expect: fail(protocol.CodeBadToken)})
	g.add(Vector{Name: "token-alg-none", Kind: "token", Comment: `alg "none"`, Frame: b64.EncodeToString([]byte(hdr("none", "sigil-test-1", protocol.TypSession))) + "." + b64.EncodeToString([]byte(c)) + ".", Expect: fail(protocol.CodeBadToken)})
	g.add(Vector{Name: "token-future-iat", Kind: "token", Comment: "issued more than the skew in the future", Frame: rawJWS(priv, hdr("EdDSA", "sigil-test-1", protocol.TypSession), strings.Replace(c, `"iat":`+strconv.FormatInt(alice.claims.IssuedAt, 10), `"iat":`+strconv.FormatInt(NowMS/1000+60, 10), 1)), Expect: fail(protocol.CodeBadToken)})
}
