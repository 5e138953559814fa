package vectors

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/sigil-ws/sigil/protocol"
)

// wrapOpts describes a hand-built wrapped key (spec.md §11.3). The zero
// value of each field is the valid choice.
type wrapOpts struct {
	plaintext   string // the JWE plaintext
	cekSize     int    // content-encryption key size; 0 means 32
	apu, apv    []byte // Concat KDF party info; a non-nil value is also sent as a header member
	headerExtra string // spliced into the protected header, e.g. `,"kid":"k"`
	epkExtra    string // spliced into epk
}

// wrapRaw builds an ECDH-ES+A256KW / A256GCM JWE to the recipient from
// go-jose's Concat KDF and AES key wrap and the standard library's
// AES-GCM, so that wrapped keys can be made that go-jose's encrypter
// refuses to produce (other header members, party info, a short CEK).
// Each is correctly encrypted: a lenient implementation would open it.
func (g *gen) wrapRaw(to *ecdsa.PublicKey, o wrapOpts) string {
	g.ephemeral++
	seed := sha256.Sum256([]byte(fmt.Sprintf("sigil vectors ephemeral %d", g.ephemeral)))
	eph, err := ecdsa.ParseRawPrivateKey(ecdsaCurve(), seed[:])
	if err != nil {
		panic(err)
	}
	pt, err := eph.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	hdrJSON := fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"kty":"EC","crv":"P-256","x":%q,"y":%q%s}`,
		b64.EncodeToString(pt[1:33]), b64.EncodeToString(pt[33:]), o.epkExtra)
	if o.apu != nil {
		hdrJSON += fmt.Sprintf(`,"apu":%q`, b64.EncodeToString(o.apu))
	}
	if o.apv != nil {
		hdrJSON += fmt.Sprintf(`,"apv":%q`, b64.EncodeToString(o.apv))
	}
	hdrJSON += o.headerExtra + "}"
	hseg := b64.EncodeToString([]byte(hdrJSON))
	kek := josecipher.DeriveECDHES(string(jose.ECDH_ES_A256KW), o.apu, o.apv, eph, to, 32)
	size := o.cekSize
	if size == 0 {
		size = 32
	}
	cek := make([]byte, size)
	iv := make([]byte, 12)
	io.ReadFull(g.rnd, cek)
	io.ReadFull(g.rnd, iv)
	kw, err := aes.NewCipher(kek)
	if err != nil {
		panic(err)
	}
	wrapped, err := josecipher.KeyWrap(kw, cek)
	if err != nil {
		panic(err)
	}
	cb, err := aes.NewCipher(cek)
	if err != nil {
		panic(err)
	}
	gcm, err := cipher.NewGCM(cb)
	if err != nil {
		panic(err)
	}
	sealed := gcm.Seal(nil, iv, []byte(o.plaintext), []byte(hseg))
	ct, tag := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	return strings.Join([]string{hseg, b64.EncodeToString(wrapped), b64.EncodeToString(iv), b64.EncodeToString(ct), b64.EncodeToString(tag)}, ".")
}

// keyPlaintext is the plaintext of a wrapped content key; extra is spliced
// in before the closing brace.
func keyPlaintext(kid string, k []byte, scope, extra string) string {
	return fmt.Sprintf(`{"kty":"oct","kid":%q,"k":%q,"alg":"A256GCM","scope":%q%s}`, kid, b64.EncodeToString(k), scope, extra)
}

func (g *gen) wrapVectors() {
	to := &g.agree["alice"].PublicKey
	add := func(name, comment, scope, jwe string, exp Expect) {
		g.add(Vector{Name: name, Kind: "wrapped_key", Comment: comment, Wrap: &WrapState{AgreementKey: "alice", Scope: scope}, Frame: jwe, Expect: exp})
	}
	okKey := func(k *protocol.ContentKey) Expect {
		return Expect{Result: "ok", Claims: mustJSON(map[string]string{"kid": k.ID, "k": b64.EncodeToString(k.Key), "scope": k.Scope})}
	}
	sk := g.contentKey(protocol.ScopeSession)
	viaJose, err := protocol.WrapContentKey(sk, to)
	if err != nil {
		panic(err)
	}
	add("wrapped-key-ok-session", "the session content key of welcome.key, wrapped by go-jose", protocol.ScopeSession, viaJose, okKey(sk))
	ck := g.contentKey("ch:rooms.lobby")
	add("wrapped-key-ok-channel", "a channel key of a sub reply, wrapped by hand", "ch:rooms.lobby",
		g.wrapRaw(to, wrapOpts{plaintext: keyPlaintext(ck.ID, ck.Key, ck.Scope, "")}), okKey(ck))
	add("wrapped-key-ok-empty-apu-apv", "empty apu and apv members are allowed", protocol.ScopeSession,
		g.wrapRaw(to, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key, sk.Scope, ""), apu: []byte{}, apv: []byte{}}), okKey(sk))

	bad := func(name, comment, scope string, o wrapOpts) {
		if o.plaintext == "" {
			o.plaintext = keyPlaintext(sk.ID, sk.Key, sk.Scope, "")
		}
		add(name, comment, scope, g.wrapRaw(to, o), fail(protocol.CodeBadEnc))
	}
	s := protocol.ScopeSession
	bad("wrapped-key-apu", "a non-empty apu, used in the key derivation (the JWE opens with it)", s, wrapOpts{apu: []byte("sigil server")})
	bad("wrapped-key-apv", "a non-empty apv, used in the key derivation (the JWE opens with it)", s, wrapOpts{apv: []byte("alice")})
	bad("wrapped-key-header-kid", "a kid member in the protected header", s, wrapOpts{headerExtra: `,"kid":"k-1"`})
	bad("wrapped-key-header-unknown", "an unknown member in the protected header", s, wrapOpts{headerExtra: `,"x-note":"hi"`})
	bad("wrapped-key-header-zip", "a zip member in the protected header (the plaintext is not compressed)", s, wrapOpts{headerExtra: `,"zip":"DEF"`})
	bad("wrapped-key-epk-kid", "epk has a member other than kty, crv, x, y", s, wrapOpts{epkExtra: `,"kid":"e-1"`})
	bad("wrapped-key-cek-16", "a 16-byte content-encryption key under enc A256GCM (AES-128-GCM)", s, wrapOpts{cekSize: 16})
	bad("wrapped-key-cek-24", "a 24-byte content-encryption key under enc A256GCM (AES-192-GCM)", s, wrapOpts{cekSize: 24})
	bad("wrapped-key-sixth-member", "a sixth member in the wrapped-key plaintext", s, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key, sk.Scope, `,"use":"enc"`)})
	bad("wrapped-key-k-16", "a content key k of 16 bytes", s, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key[:16], sk.Scope, "")})
	bad("wrapped-key-k-spare-bits", "k is not canonical base64url (spare bits)", s,
		wrapOpts{plaintext: strings.Replace(keyPlaintext(sk.ID, sk.Key, sk.Scope, ""), b64.EncodeToString(sk.Key), spare(b64.EncodeToString(sk.Key)), 1)})
	bad("wrapped-key-empty-kid", "an empty kid", s, wrapOpts{plaintext: keyPlaintext("", sk.Key, sk.Scope, "")})
	bad("wrapped-key-kty", "kty is not oct", s, wrapOpts{plaintext: strings.Replace(keyPlaintext(sk.ID, sk.Key, sk.Scope, ""), `"oct"`, `"EC"`, 1)})
	bad("wrapped-key-bad-scope", "a scope that is neither session nor ch:<channel>", s, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key, "admin", "")})
	bad("wrapped-key-wrong-scope", "a channel key where the session key is expected (welcome.key)", s, wrapOpts{plaintext: keyPlaintext(ck.ID, ck.Key, ck.Scope, "")})
	bad("wrapped-key-duplicate-member", "the plaintext repeats scope", s, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key, sk.Scope, `,"scope":"ch:rooms.lobby"`)})
	add("wrapped-key-other-recipient", "wrapped to bob's agreement key, opened with alice's", s,
		g.wrapRaw(&g.agree["bob"].PublicKey, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key, sk.Scope, "")}), fail(protocol.CodeBadEnc))
	segs := strings.Split(g.wrapRaw(to, wrapOpts{plaintext: keyPlaintext(sk.ID, sk.Key, sk.Scope, "")}), ".")
	segs[4] = spare(segs[4])
	add("wrapped-key-tag-spare-bits", "the tag segment has non-zero spare bits: it decodes leniently to the valid tag", s, strings.Join(segs, "."), fail(protocol.CodeBadEnc))
}
