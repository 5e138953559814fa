package vectors

import (
	"crypto/ed25519"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (g *gen) helloFrame(id *identity, token string, jwkOf *protocol.PrivateKey, ekey json.RawMessage) string {
	jwk, _ := jwkOf.Public().MarshalJSON()
	return g.sign(id, &protocol.Envelope{Action: protocol.ActHello, Body: mustJSON(protocol.HelloBody{Token: token, JWK: jwk, EKey: ekey})})
}

func helloOK(id *identity) Expect {
	return Expect{Result: "ok", Session: &ExpectSession{SID: id.claims.Session, Sub: id.claims.Subject, Roles: id.claims.Roles}}
}

func (g *gen) helloVectors() {
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-ok-eddsa", Kind: "hello", Comment: "a valid hello signed with an Ed25519 session key", Frame: g.helloFrame(alice, alice.token, alice.key, nil), Expect: helloOK(alice)})
	aliceES := g.identity("alice", []string{"user"}, "alice-es256")
	g.add(Vector{Name: "hello-ok-es256", Kind: "hello", Comment: "a valid hello signed with a P-256 session key (browsers)", Frame: g.helloFrame(aliceES, aliceES.token, aliceES.key, nil), Expect: helloOK(aliceES)})
	ekey, _ := protocol.AgreementJWK(g.agree["alice"])
	a3 := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-ok-ekey", Kind: "hello", Comment: "a valid hello asking for body encryption with a P-256 agreement key", Frame: g.helloFrame(a3, a3.token, a3.key, ekey), Expect: helloOK(a3)})

	a4 := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-required", Kind: "hello", Comment: "the first frame is a pub, not a hello",
		Frame: g.sign(a4, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi"}`)}), Expect: fail(protocol.CodeHelloRequired)})

	a5 := g.identity("alice", []string{"user"}, "alice-eddsa")
	rogueTok, _ := g.issue("alice", []string{"user"}, a5.key, g.rogue, nil)
	g.add(Vector{Name: "hello-token-unknown-key", Kind: "hello", Comment: "the token is signed by a key that is not in the server's JWKS (same kid, other key)", Frame: g.helloFrame(a5, rogueTok, a5.key, nil), Expect: fail(protocol.CodeBadToken)})

	a6 := g.identity("alice", []string{"user"}, "alice-eddsa")
	audTok, audClaims := g.issue("alice", []string{"user"}, a6.key, g.srv, func(i *protocol.TokenIssuer) { i.Audience = "wss://elsewhere.test/v1/ws" })
	a6.signer.Session = audClaims.Session
	g.add(Vector{Name: "hello-token-wrong-aud", Kind: "hello", Comment: "the token was issued for another audience", Frame: g.helloFrame(a6, audTok, a6.key, nil), Expect: fail(protocol.CodeBadToken)})

	a7 := g.identity("alice", []string{"user"}, "alice-eddsa")
	expTok, expClaims := g.issue("alice", []string{"user"}, a7.key, g.srv, func(i *protocol.TokenIssuer) {
		i.Now = func() time.Time { return g.now.Add(-20 * time.Minute) }
	})
	a7.signer.Session = expClaims.Session
	g.add(Vector{Name: "hello-token-expired", Kind: "hello", Comment: "the token expired five minutes ago", Frame: g.helloFrame(a7, expTok, a7.key, nil), Expect: fail(protocol.CodeTokenExpired)})

	a8 := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-token-revoked", Kind: "hello", Comment: "the token's jti is revoked", Revoked: &Revoked{JTIs: []string{a8.claims.ID}}, Frame: g.helloFrame(a8, a8.token, a8.key, nil), Expect: fail(protocol.CodeTokenRevoked)})
	a8b := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-subject-revoked", Kind: "hello", Comment: "every token of the subject issued before the revocation is revoked", Revoked: &Revoked{Subjects: []RevokedSubject{{Sub: "alice", At: a8b.claims.IssuedAt + 1}}}, Frame: g.helloFrame(a8b, a8b.token, a8b.key, nil), Expect: fail(protocol.CodeTokenRevoked)})

	// mallory presents alice's token, with her own key in the body.
	a9 := g.identity("alice", []string{"user"}, "alice-eddsa")
	mal := &identity{key: g.sess["mallory-eddsa"], signer: &protocol.ClientSigner{Key: g.sess["mallory-eddsa"], Session: a9.claims.Session, Subject: "alice", Now: g.clock, Rand: g.rnd}}
	g.add(Vector{Name: "hello-key-mismatch", Kind: "hello", Comment: "a stolen token: the hello is signed by another key, whose thumbprint is not the token's cnf.jkt", Frame: g.helloFrame(mal, a9.token, mal.key, nil), Expect: fail(protocol.CodeKeyMismatch)})

	// the body names alice's key but the frame is signed by mallory's key with alice's kid.
	a10 := g.identity("alice", []string{"user"}, "alice-eddsa")
	jwk, _ := a10.key.Public().MarshalJSON()
	env := &protocol.Envelope{ID: g.uuid(), TS: NowMS, Seq: 1, Session: a10.claims.Session, Subject: "alice", Action: protocol.ActHello,
		Body: mustJSON(protocol.HelloBody{Token: a10.token, JWK: jwk})}
	forged := rawJWS(edPriv(g.sess["mallory-eddsa"]), hdr("EdDSA", a10.key.Public().Thumbprint(), protocol.TypClient), payload(env))
	g.add(Vector{Name: "hello-bad-signature", Kind: "hello", Comment: "token and jwk are alice's, but the signature is by another key", Frame: forged, Expect: fail(protocol.CodeBadSignature)})

	a11 := g.identity("alice", []string{"user"}, "alice-eddsa")
	env11 := &protocol.Envelope{ID: g.uuid(), TS: NowMS, Seq: 1, Session: a11.claims.Session, Subject: "alice", Action: protocol.ActHello,
		Body: mustJSON(protocol.HelloBody{Token: a11.token, JWK: mustJSON(a11.key.Public())})}
	g.add(Vector{Name: "hello-kid-not-thumbprint", Kind: "hello", Comment: "the kid is not the session key's thumbprint", Frame: rawJWS(edPriv(a11.key), hdr("EdDSA", "my-key", protocol.TypClient), payload(env11)), Expect: fail(protocol.CodeUnknownKey)})

	a12 := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-body-missing-jwk", Kind: "hello", Comment: "the hello body has no jwk",
		Frame: g.sign(a12, &protocol.Envelope{Action: protocol.ActHello, Body: json.RawMessage(`{"token":"` + a12.token + `"}`)}), Expect: fail(protocol.CodeBadClaims)})
	a13 := g.identity("alice", []string{"user"}, "alice-eddsa")
	g.add(Vector{Name: "hello-body-unknown-member", Kind: "hello", Comment: "the hello body has a member the spec does not define",
		Frame: g.sign(a13, &protocol.Envelope{Action: protocol.ActHello, Body: json.RawMessage(`{"token":"` + a13.token + `","jwk":` + string(mustJSON(a13.key.Public())) + `,"admin":true}`)}), Expect: fail(protocol.CodeBadClaims)})

	a14 := g.identity("alice", []string{"user"}, "alice-eddsa")
	a14.signer.Session = g.uuid()
	g.add(Vector{Name: "hello-wrong-session", Kind: "hello", Comment: "the hello's sid is not the token's sid", Frame: g.helloFrame(a14, a14.token, a14.key, nil), Expect: fail(protocol.CodeWrongSession)})

	a15 := g.identity("alice", []string{"user"}, "alice-eddsa")
	a15.signer.SetSeq(4)
	g.add(Vector{Name: "hello-replay-seq", Kind: "hello", Comment: "a hello on a new connection whose seq does not exceed the session's last accepted seq",
		Accepted: []Accepted{{SID: a15.claims.Session, ID: g.uuid(), Seq: 9, TS: NowMS - 5000}}, Frame: g.helloFrame(a15, a15.token, a15.key, nil), Expect: fail(protocol.CodeReplaySeq)})
}

func (g *gen) clientVectors() {
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	sess := g.sessionOf(alice, g.chKey, g.aliceKey)
	helloID := g.uuid()
	accepted := []Accepted{{SID: sess.SID, ID: helloID, Seq: 1, TS: NowMS - 1000}}
	alice.signer.SetSeq(1)
	add := func(name, comment string, frame string, exp Expect) {
		g.add(Vector{Name: name, Kind: "client", Comment: comment, Session: sess, Accepted: accepted, Frame: frame, Expect: exp})
	}
	valid := func(name, comment string, env *protocol.Envelope) {
		f := g.sign(alice, env)
		add(name, comment, f, ok(claimsOf(f), bodyOf(f)))
	}
	valid("client-pub-ok", "a publish to a room", &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hello, world"}`)})
	valid("client-pub-ok-cid", "a publish with a correlation id", &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Corr: "c-1", Body: json.RawMessage(`{"text":"ack me"}`)})
	valid("client-pub-ok-unicode", "a body with escapes and non-ASCII text", &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"caf\u00e9 ☕ \"quoted\" \ud83d\ude00"}`)})
	valid("client-sub-ok", "subscribe", &protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby"})
	valid("client-unsub-ok", "unsubscribe", &protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.lobby"})
	valid("client-dm-ok", "a direct message", &protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`{"text":"psst"}`)})
	valid("client-ping-ok", "ping", &protocol.Envelope{Action: protocol.ActPing})
	valid("client-presence-ok", "presence", &protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.lobby"})
	valid("client-refresh-ok", "in-band refresh", &protocol.Envelope{Action: protocol.ActRefresh, Body: json.RawMessage(`{"refresh_token":"c3JlZnJlc2g"}`)})
	valid("client-sub-announce-ok", "a user may subscribe to announcements", &protocol.Envelope{Action: protocol.ActSub, Channel: "announce.news"})

	// Encrypted bodies.
	encPub, _ := protocol.SealBody(g.chKey, []byte(`{"text":"secret"}`))
	f := g.sign(alice, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Enc: encPub})
	add("client-pub-enc-ok", "a publish encrypted with the channel key", f, ok(claimsOf(f), json.RawMessage(`{"text":"secret"}`)))
	encDM, _ := protocol.SealBody(g.aliceKey, []byte(`{"text":"for bob only"}`))
	f = g.sign(alice, &protocol.Envelope{Action: protocol.ActDM, To: "bob", Enc: encDM})
	add("client-dm-enc-ok", "a direct message encrypted with the session key", f, ok(claimsOf(f), json.RawMessage(`{"text":"for bob only"}`)))

	base := func() *protocol.Envelope {
		return &protocol.Envelope{ID: g.uuid(), TS: NowMS, Seq: alice.signer.Seq() + 1, Session: sess.SID, Subject: "alice", Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi"}`)}
	}
	priv := edPriv(alice.key)
	kid := alice.key.Public().Thumbprint()
	h := hdr("EdDSA", kid, protocol.TypClient)

	// Step 1: size.
	big := base()
	big.Body = json.RawMessage(`{"text":"` + strings.Repeat("x", MaxFrame) + `"}`)
	add("client-too-large", "a frame over max_frame", rawJWS(priv, h, payload(big)), fail(protocol.CodeTooLarge))

	// Step 2: form.
	good := rawJWS(priv, h, payload(base()))
	parts := strings.Split(good, ".")
	add("client-malformed-two-parts", "two segments", parts[0]+"."+parts[1], fail(protocol.CodeMalformed))
	add("client-malformed-four-parts", "four segments", good+"."+parts[2], fail(protocol.CodeMalformed))
	add("client-malformed-padding", "base64 padding is not allowed", parts[0]+"."+parts[1]+"."+parts[2]+"==", fail(protocol.CodeMalformed))
	add("client-malformed-json-serialization", "JWS JSON serialization is not allowed", `{"payload":"`+parts[1]+`","protected":"`+parts[0]+`","signature":"`+parts[2]+`"}`, fail(protocol.CodeMalformed))
	add("client-malformed-header-json", "the header is not JSON", b64.EncodeToString([]byte(`{"alg":"EdDSA",`))+"."+parts[1]+"."+parts[2], fail(protocol.CodeMalformed))
	add("client-header-duplicate-member", "the header repeats alg", rawJWS(priv, `{"alg":"EdDSA","alg":"none","kid":"`+kid+`","typ":"`+protocol.TypClient+`"}`, payload(base())), fail(protocol.CodeMalformed))

	// Step 3: header allow-list and typ.
	add("client-alg-none", `alg "none" with an empty signature`, b64.EncodeToString([]byte(hdr("none", kid, protocol.TypClient)))+"."+b64.EncodeToString([]byte(payload(base())))+".", fail(protocol.CodeBadHeader))
	add("client-alg-hs256-public-key", "HS256 keyed with the session public key", hs256([]byte(alice.key.Public().Key().(ed25519.PublicKey)), hdr("HS256", kid, protocol.TypClient), payload(base())), fail(protocol.CodeBadHeader))
	add("client-alg-mismatch", "alg ES256 in the header, but the session key is Ed25519", rawJWS(priv, hdr("ES256", kid, protocol.TypClient), payload(base())), fail(protocol.CodeBadHeader))
	jwkHdr := `{"alg":"EdDSA","jwk":` + string(mustJSON(g.sess["mallory-eddsa"].Public())) + `,"kid":"` + kid + `","typ":"` + protocol.TypClient + `"}`
	add("client-header-jwk", "an embedded jwk header", rawJWS(priv, jwkHdr, payload(base())), fail(protocol.CodeBadHeader))
	for _, m := range []struct{ name, member string }{
		{"jku", `"jku":"https://evil.test/jwks"`}, {"x5u", `"x5u":"https://evil.test/cert"`}, {"x5c", `"x5c":["MIIB"]`},
		{"crit", `"crit":["b64"],"b64":false`}, {"zip", `"zip":"DEF"`}, {"cty", `"cty":"json"`}, {"unknown", `"foo":1`},
	} {
		hm := `{"alg":"EdDSA","kid":"` + kid + `","typ":"` + protocol.TypClient + `",` + m.member + `}`
		add("client-header-"+m.name, "header member "+m.name+" is not allowed", rawJWS(priv, hm, payload(base())), fail(protocol.CodeBadHeader))
	}
	add("client-header-missing-typ", "typ is required", rawJWS(priv, `{"alg":"EdDSA","kid":"`+kid+`"}`, payload(base())), fail(protocol.CodeBadHeader))
	add("client-typ-jwt", `typ "JWT"`, rawJWS(priv, hdr("EdDSA", kid, "JWT"), payload(base())), fail(protocol.CodeBadTyp))
	add("client-typ-server", "a server typ on a client frame", rawJWS(priv, hdr("EdDSA", kid, protocol.TypServer), payload(base())), fail(protocol.CodeBadTyp))
	add("client-session-token-as-message", "the session token sent as a frame", alice.token, fail(protocol.CodeBadTyp))
	add("client-typ-case", "typ compared case-sensitively", rawJWS(priv, hdr("EdDSA", kid, strings.ToUpper(protocol.TypClient)), payload(base())), fail(protocol.CodeBadTyp))

	// Step 4: key and signature.
	add("client-unknown-kid", "kid names another key", rawJWS(priv, hdr("EdDSA", g.sess["mallory-eddsa"].Public().Thumbprint(), protocol.TypClient), payload(base())), fail(protocol.CodeUnknownKey))
	good2 := rawJWS(priv, h, payload(base()))
	p2 := strings.Split(good2, ".")
	add("client-signature-bit-flip", "one bit of the signature flipped", p2[0]+"."+p2[1]+"."+flip(p2[2], 10), fail(protocol.CodeBadSignature))
	add("client-payload-bit-flip", "one bit of the payload flipped", p2[0]+"."+flip(p2[1], 40)+"."+p2[2], fail(protocol.CodeBadSignature))
	wsHdr := b64.EncodeToString([]byte(`{"alg":"EdDSA", "kid":"` + kid + `","typ":"` + protocol.TypClient + `"}`))
	add("client-header-reencoded", "the header re-encoded (same members, other bytes): the signature no longer covers it", wsHdr+"."+p2[1]+"."+p2[2], fail(protocol.CodeBadSignature))
	add("client-signed-by-other-key", "correct kid, signed by another key", rawJWS(edPriv(g.sess["mallory-eddsa"]), h, payload(base())), fail(protocol.CodeBadSignature))
	add("client-signature-truncated", "a signature of the wrong length", p2[0]+"."+p2[1]+"."+p2[2][:40], fail(protocol.CodeBadSignature))

	// Step 5: strict claims.
	e := base()
	pl := payload(e)
	claimCase := func(name, comment, p string) {
		add(name, comment, rawJWS(priv, h, p), fail(protocol.CodeBadClaims))
	}
	claimCase("client-claims-duplicate", `a duplicate claim: "act":"pub","act":"admin"`, strings.Replace(pl, `"act":"pub"`, `"act":"pub","act":"admin"`, 1))
	claimCase("client-claims-case-variant", `a case-variant claim name "Act"`, strings.Replace(pl, `"act":"pub"`, `"act":"pub","Act":"admin"`, 1))
	claimCase("client-claims-unknown", "an unknown claim", strings.Replace(pl, `"act":"pub"`, `"act":"pub","admin":true`, 1))
	claimCase("client-claims-escaped-duplicate", `a duplicate claim spelled with an escape: "\u0061ct"`, strings.Replace(pl, `"act":"pub"`, `"act":"pub","\u0061ct":"admin"`, 1))
	claimCase("client-claims-uuid-uppercase", "a non-canonical (uppercase) UUID id", strings.Replace(pl, e.ID, strings.ToUpper(e.ID), 1))
	claimCase("client-claims-uuid-braces", "a non-canonical UUID id in braces", strings.Replace(pl, `"`+e.ID+`"`, `"{`+e.ID+`}"`, 1))
	claimCase("client-claims-missing-id", "no id", strings.Replace(pl, `"id":"`+e.ID+`",`, "", 1))
	claimCase("client-claims-missing-seq", "no seq", strings.Replace(pl, `,"seq":`+strconv.FormatUint(e.Seq, 10), "", 1))
	claimCase("client-claims-seq-zero", "seq 0", strings.Replace(pl, `"seq":`+strconv.FormatUint(e.Seq, 10), `"seq":0`, 1))
	claimCase("client-claims-seq-string", "seq as a string", strings.Replace(pl, `"seq":`+strconv.FormatUint(e.Seq, 10), `"seq":"`+strconv.FormatUint(e.Seq, 10)+`"`, 1))
	claimCase("client-claims-seq-too-large", "seq beyond 2^53-1", strings.Replace(pl, `"seq":`+strconv.FormatUint(e.Seq, 10), `"seq":9007199254740992`, 1))
	claimCase("client-claims-seq-exponent", "seq written with an exponent", strings.Replace(pl, `"seq":`+strconv.FormatUint(e.Seq, 10), `"seq":3e0`, 1))
	claimCase("client-claims-ts-fraction", "ts with a fraction", strings.Replace(pl, `"ts":`+strconv.FormatInt(e.TS, 10), `"ts":`+strconv.FormatInt(e.TS, 10)+`.5`, 1))
	claimCase("client-claims-ts-negative", "a negative ts", strings.Replace(pl, `"ts":`+strconv.FormatInt(e.TS, 10), `"ts":-1`, 1))
	claimCase("client-claims-body-and-enc", "both body and enc", strings.Replace(pl, `"body":`, `"enc":"x.y.z.w.v","body":`, 1))
	claimCase("client-claims-invalid-utf8", "invalid UTF-8 in the payload", strings.Replace(pl, `"hi"`, "\"h\xffi\"", 1))
	claimCase("client-claims-lone-surrogate", "an unpaired surrogate escape", strings.Replace(pl, `"hi"`, `"\ud800"`, 1))
	claimCase("client-claims-deep-nesting", "a body nested 40 deep", strings.Replace(pl, `{"text":"hi"}`, strings.Repeat("[", 40)+strings.Repeat("]", 40), 1))
	claimCase("client-claims-big-number", "a number out of range in the body", strings.Replace(pl, `{"text":"hi"}`, `{"n":1e400}`, 1))
	claimCase("client-claims-bad-action", "an action name with upper case", strings.Replace(pl, `"act":"pub"`, `"act":"Pub"`, 1))
	claimCase("client-claims-bad-channel", "a channel with a space", strings.Replace(pl, `"ch":"rooms.lobby"`, `"ch":"rooms. lobby"`, 1))
	claimCase("client-claims-not-object", "the payload is an array", `["pub"]`)
	claimCase("client-claims-trailing", "data after the JSON object", pl+` {}`)

	// Step 6: session binding.
	ws := base()
	ws.Session = g.uuid()
	add("client-wrong-session", "the sid of another session", rawJWS(priv, h, payload(ws)), fail(protocol.CodeWrongSession))
	wsub := base()
	wsub.Subject = "bob"
	add("client-wrong-subject", "sub is not the session's subject", rawJWS(priv, h, payload(wsub)), fail(protocol.CodeWrongSession))

	// Step 7: freshness.
	st := base()
	st.TS = NowMS - SkewMS - 1
	add("client-stale", "ts one millisecond older than now - skew", rawJWS(priv, h, payload(st)), fail(protocol.CodeStale))
	fu := base()
	fu.TS = NowMS + SkewMS + 1
	add("client-future", "ts one millisecond newer than now + skew", rawJWS(priv, h, payload(fu)), fail(protocol.CodeFuture))
	edge := base()
	edge.TS = NowMS - SkewMS
	ef := rawJWS(priv, h, payload(edge))
	add("client-fresh-edge", "ts exactly now - skew is still fresh", ef, ok(claimsOf(ef), bodyOf(ef)))

	// Step 8: replay.
	rid := base()
	rid.ID = helloID
	add("client-replay-id", "the id of a frame already accepted, with a higher seq", rawJWS(priv, h, payload(rid)), fail(protocol.CodeReplayID))
	rseq := base()
	rseq.Seq = 1
	add("client-replay-seq", "a new id with a seq that was already used", rawJWS(priv, h, payload(rseq)), fail(protocol.CodeReplaySeq))

	// Step 9: token.
	expSess := *sess
	expSess.EXP = NowMS/1000 - 1
	ex := rawJWS(priv, h, payload(base()))
	g.add(Vector{Name: "client-token-expired", Kind: "client", Comment: "the session token expired a second ago", Session: &expSess, Accepted: accepted, Frame: ex, Expect: fail(protocol.CodeTokenExpired)})
	g.add(Vector{Name: "client-token-revoked", Kind: "client", Comment: "the session token was revoked", Session: sess, Accepted: accepted, Revoked: &Revoked{JTIs: []string{sess.JTI}}, Frame: rawJWS(priv, h, payload(base())), Expect: fail(protocol.CodeTokenRevoked)})

	// Step 10: authorization.
	fb := base()
	fb.Channel = "announce.news"
	add("client-forbidden-channel", "a user publishing to an announcer-only channel", rawJWS(priv, h, payload(fb)), fail(protocol.CodeForbidden))
	fa := base()
	fa.Action, fa.Channel = "orders.create", ""
	add("client-forbidden-action", "an application action that needs role trader", rawJWS(priv, h, payload(fa)), fail(protocol.CodeForbidden))
	fs := base()
	fs.Action, fs.Channel, fs.Body = protocol.ActSub, "private.ops", nil
	add("client-forbidden-unlisted-channel", "a channel no rule mentions: default deny", rawJWS(priv, h, payload(fs)), fail(protocol.CodeForbidden))

	// Step 11: decryption.
	encCase := func(name, comment, enc string) {
		ee := base()
		ee.Body, ee.Enc = nil, enc
		add(name, comment, rawJWS(priv, h, payload(ee)), fail(protocol.CodeBadEnc))
	}
	ep := strings.Split(encPub, ".")
	encCase("client-enc-bad-tag", "the JWE tag has a flipped bit", ep[0]+"."+ep[1]+"."+ep[2]+"."+ep[3]+"."+flip(ep[4], 3))
	encCase("client-enc-bad-ciphertext", "the JWE ciphertext has a flipped bit", ep[0]+"."+ep[1]+"."+ep[2]+"."+flip(ep[3], 2)+"."+ep[4])
	unknownKey := g.contentKey("ch:rooms.lobby")
	uk, _ := protocol.SealBody(unknownKey, []byte(`{"text":"?"}`))
	encCase("client-enc-unknown-kid", "sealed under a key the session does not have", uk)
	wrongScope, _ := protocol.SealBody(g.aliceKey, []byte(`{"text":"?"}`))
	encCase("client-enc-wrong-scope", "a publish sealed with the session key instead of the channel key", wrongScope)
	encCase("client-enc-not-jwe", "enc is not a JWE", "not-a-jwe")
	zipHdr := b64.EncodeToString([]byte(`{"alg":"dir","enc":"A256GCM","kid":"` + g.chKey.ID + `","zip":"DEF"}`))
	encCase("client-enc-zip", "a compressed JWE (zip) is not allowed", zipHdr+"."+ep[1]+"."+ep[2]+"."+ep[3]+"."+ep[4])
}
