package vectors

import (
	"encoding/json"

	"github.com/sigil-ws/sigil/protocol"
)

// jwkVariant returns the public JWK of key as a JSON object with members
// changed: a nil value deletes a member.
func jwkVariant(key *protocol.PrivateKey, change map[string]any) json.RawMessage {
	b, err := key.Public().MarshalJSON()
	if err != nil {
		panic(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	for k, v := range change {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return mustJSON(m)
}

// helloWith signs a hello whose body carries jwk and ekey exactly as given.
func (g *gen) helloWith(id *identity, jwk, ekey json.RawMessage) string {
	return g.sign(id, &protocol.Envelope{Action: protocol.ActHello, Body: mustJSON(protocol.HelloBody{Token: id.token, JWK: jwk, EKey: ekey})})
}

// jwkVectors check the member rules of a public JWK (spec.md §3.3) in the
// one place a client sends one in a frame, the hello, and in a delivery.
func (g *gen) jwkVectors() {
	es := g.sess["alice-es256"]
	ed := g.sess["alice-eddsa"]
	hello := func(name, comment, keyName string, jwk, ekey json.RawMessage, ok bool) {
		id := g.identity("alice", []string{"user"}, keyName)
		exp := fail(protocol.CodeBadClaims)
		if ok {
			exp = helloOK(id)
		}
		g.add(Vector{Name: name, Kind: "hello", Comment: comment, Frame: g.helloWith(id, jwk, ekey), Expect: exp})
	}
	// What WebCrypto's exportKey("jwk") gives for a public verification
	// key: ext and key_ops ["verify"], no kid, alg or use.
	hello("hello-jwk-webcrypto-export-ok", "the session JWK as WebCrypto exports it: ext true and key_ops [\"verify\"]", "alice-es256",
		jwkVariant(es, map[string]any{"kid": nil, "alg": nil, "use": nil, "ext": true, "key_ops": []string{"verify"}}), nil, true)
	hello("hello-jwk-key-ops-sign", "key_ops other than [\"verify\"]", "alice-es256", jwkVariant(es, map[string]any{"key_ops": []string{"sign"}}), nil, false)
	hello("hello-jwk-key-ops-extra", "key_ops with verify and another operation", "alice-eddsa", jwkVariant(ed, map[string]any{"key_ops": []string{"verify", "sign"}}), nil, false)
	hello("hello-jwk-key-ops-string", "key_ops that is not an array", "alice-eddsa", jwkVariant(ed, map[string]any{"key_ops": "verify"}), nil, false)
	hello("hello-jwk-ext-string", "ext that is not a boolean", "alice-eddsa", jwkVariant(ed, map[string]any{"ext": "true"}), nil, false)
	hello("hello-jwk-x5c", "an x5c member (certificates are not used)", "alice-eddsa", jwkVariant(ed, map[string]any{"x5c": []string{"MIIB"}}), nil, false)
	hello("hello-jwk-jku", "a jku member (keys are never fetched)", "alice-eddsa", jwkVariant(ed, map[string]any{"jku": "https://evil.test/jwks"}), nil, false)
	hello("hello-jwk-unknown-member", "a member the spec does not list", "alice-eddsa", jwkVariant(ed, map[string]any{"note": "hi"}), nil, false)
	hello("hello-jwk-private", "a private member d", "alice-eddsa", jwkVariant(ed, map[string]any{"d": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}), nil, false)
	hello("hello-jwk-okp-with-y", "an Ed25519 key with a y member", "alice-eddsa", jwkVariant(ed, map[string]any{"y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}), nil, false)
	hello("hello-jwk-use-enc", "use enc on a signing key", "alice-eddsa", jwkVariant(ed, map[string]any{"use": "enc"}), nil, false)
	var x string
	json.Unmarshal(jwkVariant(ed, nil), &struct {
		X *string `json:"x"`
	}{&x})
	hello("hello-jwk-x-spare-bits", "x is not canonical base64url (spare bits): its thumbprint, computed from the key, would still match cnf.jkt", "alice-eddsa",
		jwkVariant(ed, map[string]any{"x": spare(x)}), nil, false)

	ekey, _ := protocol.AgreementJWK(g.agree["alice"])
	var ek map[string]any
	json.Unmarshal(ekey, &ek)
	ekeyWith := func(change map[string]any) json.RawMessage {
		m := map[string]any{}
		for k, v := range ek {
			m[k] = v
		}
		for k, v := range change {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return mustJSON(m)
	}
	edJWK, _ := ed.Public().MarshalJSON()
	hello("hello-ekey-webcrypto-export-ok", "the ekey as WebCrypto exports a public ECDH key: ext true and key_ops []", "alice-eddsa", edJWK,
		ekeyWith(map[string]any{"alg": nil, "use": nil, "ext": true, "key_ops": []string{}}), true)
	hello("hello-ekey-key-ops", "an ekey whose key_ops is not empty", "alice-eddsa", edJWK, ekeyWith(map[string]any{"key_ops": []string{"deriveBits"}}), false)
	hello("hello-ekey-unknown-member", "an ekey with a member the spec does not list", "alice-eddsa", edJWK, ekeyWith(map[string]any{"kid2": "x"}), false)

	// A delivery's jwk follows the same rules.
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	bob := g.identity("bob", []string{"user"}, "bob-eddsa")
	pub := g.sign(alice, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi"}`)})
	d := g.serverSign(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.lobby",
		Body: mustJSON(protocol.DeliverBody{Frame: pub, JWK: jwkVariant(ed, map[string]any{"key_ops": []string{"sign"}}), Sub: "alice"})})
	g.add(Vector{Name: "delivery-jwk-key-ops", Kind: "delivery", Comment: "the delivery's jwk has key_ops other than [\"verify\"]",
		Client: &ClientState{SID: bob.claims.Session, Sub: "bob"}, Frame: d, Expect: fail(protocol.CodeBadClaims)})
}
