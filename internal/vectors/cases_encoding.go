package vectors

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"

	"github.com/sigil-ws/sigil/protocol"
)

// Strict base64url (spec.md §5.1, §7 step 2): every segment of every
// compact JWS — client frames, server frames, the sender frame inside a
// delivery, session tokens — has exactly one accepted spelling. These
// vectors are signed over the exact segments they carry, so a verifier
// that decodes leniently and checks the signature over the raw text would
// accept them; a verifier must reject them at step 2 instead.

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// spare sets the lowest spare bit of the last character of an unpadded
// base64url segment: the segment still decodes (leniently) to the same
// bytes, but it is not the canonical encoding.
func spare(seg string) string {
	if len(seg)%4 != 2 && len(seg)%4 != 3 {
		panic("vectors: segment has no spare bits")
	}
	v := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[v|1])
}

// pad appends the '=' padding of standard base64 to an unpadded segment.
func pad(seg string) string {
	switch len(seg) % 4 {
	case 2:
		return seg + "=="
	case 3:
		return seg + "="
	}
	panic("vectors: segment needs no padding")
}

// signSegments signs the signing input hseg.pseg exactly as given.
func signSegments(priv ed25519.PrivateKey, hseg, pseg string) string {
	in := hseg + "." + pseg
	return in + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

// unaligned returns make(pad) for the shortest pad of "x"s that makes a
// JSON text whose length is not a multiple of 3, so that its base64url
// encoding has spare bits.
func unaligned(make func(pad string) string) string {
	p := ""
	for {
		if s := make(p); len(s)%3 != 0 {
			return s
		}
		p += "x"
	}
}

// encodingCase is one non-canonical spelling of a signed compact JWS.
type encodingCase struct {
	name, comment, frame string
}

// encodings returns the non-canonical spellings of a JWS with header hdrJSON
// and payload payloadJSON, signed by priv over what each carries.
func encodings(priv ed25519.PrivateKey, hdrJSON, payloadJSON string) []encodingCase {
	hseg, pseg := b64.EncodeToString([]byte(hdrJSON)), b64.EncodeToString([]byte(payloadJSON))
	good := strings.Split(signSegments(priv, hseg, pseg), ".")
	return []encodingCase{
		{"header-spare-bits", "the header segment has non-zero spare bits in its last character (signed as sent)", signSegments(priv, spare(hseg), pseg)},
		{"payload-spare-bits", "the payload segment has non-zero spare bits in its last character (signed as sent)", signSegments(priv, hseg, spare(pseg))},
		{"signature-spare-bits", "the signature segment has non-zero spare bits: it decodes leniently to the valid signature", good[0] + "." + good[1] + "." + spare(good[2])},
		{"header-padding", "the header segment carries base64 padding (signed as sent)", signSegments(priv, pad(hseg), pseg)},
		{"payload-padding", "the payload segment carries base64 padding (signed as sent)", signSegments(priv, hseg, pad(pseg))},
	}
}

func (g *gen) encodingVectors() {
	// Client frames (and so proofs, which are client frames).
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	sess := g.sessionOf(alice, g.aliceKey)
	accepted := []Accepted{{SID: sess.SID, ID: g.uuid(), Seq: 1, TS: NowMS - 1000}}
	priv := edPriv(alice.key)
	kid := alice.key.Public().Thumbprint()
	pl := unaligned(func(p string) string {
		return payload(&protocol.Envelope{ID: "2d8f5a3e-6b1c-4f0a-9e7d-3c2b1a0f9e8d", TS: NowMS, Seq: 2, Session: sess.SID, Subject: "alice",
			Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"spare bits` + p + `"}`)})
	})
	for _, c := range encodings(priv, hdr("EdDSA", kid, protocol.TypClient), pl) {
		g.add(Vector{Name: "client-malformed-" + c.name, Kind: "client", Comment: c.comment, Session: sess, Accepted: accepted, Frame: c.frame, Expect: fail(protocol.CodeMalformed)})
	}
	// Step 2 comes before the key is looked up: a non-canonical signature
	// under a kid that names another key is malformed, not unknown_key.
	other := strings.Split(rawJWS(priv, hdr("EdDSA", g.sess["mallory-eddsa"].Public().Thumbprint(), protocol.TypClient), pl), ".")
	g.add(Vector{Name: "client-malformed-signature-spare-bits-unknown-kid", Kind: "client", Comment: "a non-canonical signature segment is malformed (step 2) even when the kid names another key (step 4)",
		Session: sess, Accepted: accepted, Frame: other[0] + "." + other[1] + "." + spare(other[2]), Expect: fail(protocol.CodeMalformed)})
	// A sealed body is a compact JWE: its segments are canonical too.
	sealed, err := protocol.SealBody(g.aliceKey, []byte(`{"text":"sealed"}`))
	if err != nil {
		panic(err)
	}
	ep := strings.Split(sealed, ".")
	ep[4] = spare(ep[4])
	encFrame := rawJWS(priv, hdr("EdDSA", kid, protocol.TypClient), payload(&protocol.Envelope{ID: "7c4e2b9a-1d3f-4e6a-8b5c-0f1e2d3c4b5a", TS: NowMS, Seq: 2,
		Session: sess.SID, Subject: "alice", Action: protocol.ActDM, To: "bob", Enc: strings.Join(ep, ".")}))
	g.add(Vector{Name: "client-enc-spare-bits", Kind: "client", Comment: "the JWE tag segment of enc has non-zero spare bits: it decodes leniently to the valid tag",
		Session: sess, Accepted: accepted, Frame: encFrame, Expect: fail(protocol.CodeBadEnc)})

	// Hello: the frame itself, and the token inside it.
	a2 := g.identity("alice", []string{"user"}, "alice-eddsa")
	hf := strings.Split(g.helloFrame(a2, a2.token, a2.key, nil), ".")
	g.add(Vector{Name: "hello-malformed-signature-spare-bits", Kind: "hello", Comment: "the hello's signature segment has non-zero spare bits",
		Frame: hf[0] + "." + hf[1] + "." + spare(hf[2]), Expect: fail(protocol.CodeMalformed)})
	a3 := g.identity("alice", []string{"user"}, "alice-eddsa")
	tp := strings.Split(a3.token, ".")
	g.add(Vector{Name: "hello-token-signature-spare-bits", Kind: "hello", Comment: "the session token in the hello has a signature segment with non-zero spare bits",
		Frame: g.helloFrame(a3, tp[0]+"."+tp[1]+"."+spare(tp[2]), a3.key, nil), Expect: fail(protocol.CodeBadToken)})

	// Server frames.
	cs := &ClientState{SID: alice.claims.Session, Sub: "alice"}
	spl := unaligned(func(p string) string {
		return payload(&protocol.Envelope{ID: "5b3a1c2d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", TS: NowMS, Session: cs.SID, Action: protocol.ActReply, Corr: "c" + p})
	})
	for _, c := range encodings(edPriv(g.srv), hdr("EdDSA", "sigil-test-1", protocol.TypServer), spl) {
		g.add(Vector{Name: "server-malformed-" + c.name, Kind: "server", Comment: c.comment, Client: cs, Frame: c.frame, Expect: fail(protocol.CodeMalformed)})
	}

	sk := strings.Split(rawJWS(edPriv(g.srv), hdr("EdDSA", "sigil-test-9", protocol.TypServer), spl), ".")
	g.add(Vector{Name: "server-malformed-signature-spare-bits-unknown-kid", Kind: "server", Comment: "a non-canonical signature segment is malformed (step 2) even when the kid is not in the JWKS",
		Client: cs, Frame: sk[0] + "." + sk[1] + "." + spare(sk[2]), Expect: fail(protocol.CodeMalformed)})

	// The sender's frame inside a delivery.
	bob := g.identity("bob", []string{"user"}, "bob-eddsa")
	dcs := &ClientState{SID: bob.claims.Session, Sub: "bob"}
	spub := unaligned(func(p string) string {
		return payload(&protocol.Envelope{ID: "9a8b7c6d-5e4f-4a3b-9c1d-0e9f8a7b6c5d", TS: NowMS, Seq: 3, Session: alice.claims.Session, Subject: "alice",
			Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"to the room` + p + `"}`)})
	})
	for _, c := range encodings(priv, hdr("EdDSA", kid, protocol.TypClient), spub)[1:3] {
		g.add(Vector{Name: "delivery-sender-" + c.name, Kind: "delivery", Comment: "the sender's frame inside the delivery: " + c.comment,
			Client: dcs, Frame: g.delivery(protocol.ActDeliver, c.frame, alice, "rooms.lobby", "", ""), Expect: fail(protocol.CodeMalformed)})
	}

	// Session tokens: every failure of a token is bad_token (§4.2).
	tcl := unaligned(func(p string) string {
		c := *a3.claims
		c.Subject = "alice" + p
		b, _ := json.Marshal(&c)
		return string(b)
	})
	for _, c := range encodings(edPriv(g.srv), hdr("EdDSA", "sigil-test-1", protocol.TypSession), tcl) {
		g.add(Vector{Name: "token-" + c.name, Kind: "token", Comment: c.comment, Frame: c.frame, Expect: fail(protocol.CodeBadToken)})
	}
}
