package protocol

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"sync"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

// Signature algorithms. These two are the whole allow-list: every key is
// bound to exactly one of them, and a verifier takes the algorithm from the
// key, never from the frame's header.
const (
	EdDSA = jose.EdDSA // Ed25519; the default for servers and Go clients
	ES256 = jose.ES256 // ECDSA P-256 with SHA-256; for browsers
)

// algFor returns the one algorithm a public key may be used with.
func algFor(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errString("bad Ed25519 key size")
		}
		return EdDSA, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", errString("only the P-256 curve is allowed")
		}
		return ES256, nil
	}
	return "", errString("key type not allowed (use Ed25519 or P-256)")
}

// PublicKey is a verification key bound to one algorithm.
type PublicKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey
	jkt string           // RFC 7638 thumbprint, computed once
}

// KeyID returns the key's kid.
func (k *PublicKey) KeyID() string { return k.kid }

// Algorithm returns the only algorithm this key verifies.
func (k *PublicKey) Algorithm() jose.SignatureAlgorithm { return k.alg }

// Thumbprint returns the RFC 7638 JWK SHA-256 thumbprint, base64url without
// padding. A session token's cnf.jkt and a client frame's kid are this value.
func (k *PublicKey) Thumbprint() string { return k.jkt }

// Key returns the underlying crypto key.
func (k *PublicKey) Key() crypto.PublicKey { return k.key }

// JWK returns the public key as a JWK with kid, alg and use set.
func (k *PublicKey) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.key, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// MarshalJSON encodes the key as a public JWK.
func (k *PublicKey) MarshalJSON() ([]byte, error) { return k.JWK().MarshalJSON() }

func newPublicKey(pub crypto.PublicKey, kid string) (*PublicKey, error) {
	alg, err := algFor(pub)
	if err != nil {
		return nil, err
	}
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	k := &PublicKey{alg: alg, key: pub, jkt: base64.RawURLEncoding.EncodeToString(tp)}
	k.kid = kid
	if kid == "" {
		k.kid = k.jkt
	}
	return k, nil
}

// NewPublicKey wraps an Ed25519 or P-256 public key. An empty kid means the
// key's thumbprint.
func NewPublicKey(pub crypto.PublicKey, kid string) (*PublicKey, error) {
	return newPublicKey(pub, kid)
}

// ParsePublicJWK decodes a public JWK strictly (spec.md §3.3): Ed25519
// (kty OKP) or P-256 (kty EC) only; only the members kty, crv, x, y (EC),
// kid, alg, use, key_ops and ext, each of its JSON type; x and y canonical
// base64url of 32 bytes; an alg, if present, that matches the key type; a
// use, if present, of "sig"; key_ops, if present, exactly ["verify"]. Private
// members, certificate and URL members (x5c, x5u, jku, ...) and unknown
// members are refused. An absent kid becomes the thumbprint.
func ParsePublicJWK(data []byte) (*PublicKey, error) {
	if err := checkPublicJWK(data, "sig"); err != nil {
		return nil, err
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("jwk: %w", err)
	}
	if !jwk.IsPublic() {
		return nil, errString("jwk: must be a public key")
	}
	k, err := newPublicKey(jwk.Key, jwk.KeyID)
	if err != nil {
		return nil, fmt.Errorf("jwk: %w", err)
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(k.alg) {
		return nil, fmt.Errorf("jwk: alg %q does not fit the key type", jwk.Algorithm)
	}
	return k, nil
}

// jwkMembers are the members a public JWK may have (spec.md §3.3).
var jwkMembers = map[string]bool{
	"kty": true, "crv": true, "x": true, "y": true, "kid": true, "alg": true, "use": true, "key_ops": true, "ext": true,
}

// jwkPrivate are the private-key members of RFC 7518 §6.
var jwkPrivate = map[string]bool{"d": true, "p": true, "q": true, "dp": true, "dq": true, "qi": true, "oth": true, "k": true}

// checkPublicJWK applies the member rules of spec.md §3.3 to a public JWK
// for use ("sig": session and JWKS keys; "enc": the ekey of hello), before
// go-jose reads its key material (go-jose ignores unknown members and
// key_ops, decodes x and y leniently, and acts on x5c).
func checkPublicJWK(data []byte, use string) error {
	obj, err := decodeObject(data)
	if err != nil {
		return fmt.Errorf("jwk: %w", err)
	}
	for name, raw := range obj {
		switch {
		case jwkPrivate[name]:
			return errString("jwk: must be a public key")
		case !jwkMembers[name]:
			return fmt.Errorf("jwk: member %s is not allowed", quote(name))
		case name == "ext":
			if string(raw) != "true" && string(raw) != "false" {
				return errString("jwk: ext must be a boolean")
			}
		case name == "key_ops":
			var ops []string
			if err := json.Unmarshal(raw, &ops); err != nil || ops == nil {
				return errString("jwk: key_ops must be an array of strings")
			}
			if use == "sig" && (len(ops) != 1 || ops[0] != "verify") || use == "enc" && len(ops) != 0 {
				return fmt.Errorf("jwk: key_ops must be %s", map[string]string{"sig": `["verify"]`, "enc": "[]"}[use])
			}
		default:
			if _, err := decodeString(raw, name, maxStringClaim); err != nil {
				return fmt.Errorf("jwk: %w", err)
			}
		}
	}
	kty, _, _ := obj.str("kty", false, maxStringClaim)
	crv, _, _ := obj.str("crv", false, maxStringClaim)
	_, hasY := obj["y"]
	coords := []string{"x"}
	switch {
	case kty == "OKP" && crv == "Ed25519" && use == "sig":
		if hasY {
			return errString("jwk: an Ed25519 key has no y")
		}
	case kty == "EC" && crv == "P-256":
		coords = append(coords, "y")
	default:
		if use == "enc" {
			return errString("jwk: must be a public P-256 key")
		}
		return errString("jwk: only Ed25519 (OKP) and P-256 (EC) keys are allowed")
	}
	for _, c := range coords {
		v, ok, _ := obj.str(c, true, maxStringClaim)
		if !ok || !canonicalB64String(v) || b64.DecodedLen(len(v)) != 32 {
			return fmt.Errorf("jwk: %s must be 32 bytes in canonical unpadded base64url", c)
		}
	}
	if u, ok, _ := obj.str("use", false, maxStringClaim); ok && u != use {
		return fmt.Errorf("jwk: use must be %s", use)
	}
	return nil
}

// PrivateKey is a signing key bound to one algorithm.
type PrivateKey struct {
	pub     *PublicKey
	key     crypto.Signer
	signers sync.Map // typ -> jose.Signer
}

// Public returns the public half.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// KeyID returns the key's kid.
func (k *PrivateKey) KeyID() string { return k.pub.kid }

// Algorithm returns the only algorithm this key signs with.
func (k *PrivateKey) Algorithm() jose.SignatureAlgorithm { return k.pub.alg }

// String never prints key material.
func (k *PrivateKey) String() string {
	return "PrivateKey(" + string(k.pub.alg) + ", " + k.pub.kid + ")"
}

// GenerateKey creates a new key pair for alg (EdDSA or ES256). A nil rand
// means crypto/rand. The kid is the thumbprint.
func GenerateKey(alg jose.SignatureAlgorithm, r io.Reader) (*PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	switch alg {
	case EdDSA:
		_, priv, err := ed25519.GenerateKey(r)
		if err != nil {
			return nil, err
		}
		return NewPrivateKey(priv, "")
	case ES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), r)
		if err != nil {
			return nil, err
		}
		return NewPrivateKey(priv, "")
	}
	return nil, fmt.Errorf("algorithm %q not allowed", alg)
}

// KeyFromSeed derives a key deterministically from a 32-byte seed. It exists
// for test vectors and tests; real keys come from GenerateKey.
func KeyFromSeed(alg jose.SignatureAlgorithm, seed string, kid string) (*PrivateKey, error) {
	s := sha256.Sum256([]byte(seed))
	switch alg {
	case EdDSA:
		return NewPrivateKey(ed25519.NewKeyFromSeed(s[:]), kid)
	case ES256:
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), s[:])
		if err != nil {
			return nil, err
		}
		return NewPrivateKey(priv, kid)
	}
	return nil, fmt.Errorf("algorithm %q not allowed", alg)
}

// NewPrivateKey wraps an ed25519.PrivateKey or *ecdsa.PrivateKey (P-256).
// An empty kid means the thumbprint.
func NewPrivateKey(priv crypto.Signer, kid string) (*PrivateKey, error) {
	pub, err := newPublicKey(priv.Public(), kid)
	if err != nil {
		return nil, err
	}
	return &PrivateKey{pub: pub, key: priv}, nil
}

// ParsePrivateJWK decodes a private JWK (as written by MarshalPrivateJWK).
func ParsePrivateJWK(data []byte) (*PrivateKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("jwk: %w", err)
	}
	signer, ok := jwk.Key.(crypto.Signer)
	if !ok || jwk.IsPublic() {
		return nil, errString("jwk: not a private signing key")
	}
	k, err := NewPrivateKey(signer, jwk.KeyID)
	if err != nil {
		return nil, err
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(k.pub.alg) {
		return nil, fmt.Errorf("jwk: alg %q does not fit the key type", jwk.Algorithm)
	}
	return k, nil
}

// MarshalPrivateJWK encodes the private key as a JWK, for key files. Treat
// the output as a secret.
func (k *PrivateKey) MarshalPrivateJWK() ([]byte, error) {
	return json.Marshal(jose.JSONWebKey{Key: k.key, KeyID: k.pub.kid, Algorithm: string(k.pub.alg), Use: "sig"})
}

// typedSigner is a go-jose signer for one typ, with the base64url protected
// header it produces. go-jose encodes a header deterministically (sorted
// members), so the segment is computed once, and SignCompact joins it with
// the payload and go-jose's signature instead of serializing the header a
// second time.
type typedSigner struct {
	signer jose.Signer
	header string // base64url protected header, exactly {"alg","kid","typ"}
}

// signer returns the cached signer for typ.
func (k *PrivateKey) signer(typ string) (*typedSigner, error) {
	if s, ok := k.signers.Load(typ); ok {
		return s.(*typedSigner), nil
	}
	s, err := jose.NewSigner(jose.SigningKey{
		Algorithm: k.pub.alg,
		Key:       jose.JSONWebKey{Key: k.key, KeyID: k.pub.kid, Algorithm: string(k.pub.alg)},
	}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		return nil, err
	}
	// The header go-jose signs: its encoder sorts members, so this is the
	// same byte string (TestSignCompactMatchesGoJose checks it).
	hdr, err := json.Marshal(map[string]string{"alg": string(k.pub.alg), "kid": k.pub.kid, "typ": typ})
	if err != nil {
		return nil, err
	}
	ts := &typedSigner{signer: s, header: b64.EncodeToString(hdr)}
	k.signers.Store(typ, ts)
	return ts, nil
}

// SignCompact signs payload as a compact JWS with header {alg, kid, typ}.
func (k *PrivateKey) SignCompact(typ string, payload []byte) (string, error) {
	out, err := k.signCompact(typ, payload)
	return string(out), err
}

// signCompact is SignCompact returning bytes, as frames are sent. An
// Ed25519 key signs the signing input with one ed25519.Sign, written
// straight into the frame after the cached header segment: the bytes are
// what go-jose's Sign and CompactSerialize give (Ed25519 signatures are
// deterministic; TestSignCompactMatchesGoJose), without its second header
// encoding, its JSON object and its copies. Other keys go through go-jose.
func (k *PrivateKey) signCompact(typ string, payload []byte) ([]byte, error) {
	s, err := k.signer(typ)
	if err != nil {
		return nil, err
	}
	size := len(s.header) + 1 + b64.EncodedLen(len(payload)) + 1 + b64.EncodedLen(sigSize)
	if ed, ok := k.key.(ed25519.PrivateKey); ok {
		out := make([]byte, 0, size)
		out = append(out, s.header...)
		out = append(out, '.')
		out = b64.AppendEncode(out, payload)
		sig := ed25519.Sign(ed, out)
		out = append(out, '.')
		return b64.AppendEncode(out, sig), nil
	}
	obj, err := s.signer.Sign(payload)
	if err != nil {
		return nil, err
	}
	if len(obj.Signatures) != 1 {
		return nil, errString("go-jose returned no signature")
	}
	sig := obj.Signatures[0].Signature
	out := make([]byte, 0, size)
	out = append(out, s.header...)
	out = append(out, '.')
	out = b64.AppendEncode(out, payload)
	out = append(out, '.')
	return b64.AppendEncode(out, sig), nil
}

// KeySet is a set of public keys by kid: the server's JWKS as a verifier
// sees it. It is safe for concurrent use once built.
type KeySet struct {
	keys map[string]*PublicKey
}

// NewKeySet builds a key set. Duplicate kids are an error.
func NewKeySet(keys ...*PublicKey) (*KeySet, error) {
	ks := &KeySet{keys: make(map[string]*PublicKey, len(keys))}
	for _, k := range keys {
		if _, dup := ks.keys[k.kid]; dup {
			return nil, fmt.Errorf("duplicate kid %q", k.kid)
		}
		ks.keys[k.kid] = k
	}
	return ks, nil
}

// Key returns the key with the given kid.
func (ks *KeySet) Key(kid string) (*PublicKey, bool) {
	if ks == nil {
		return nil, false
	}
	k, ok := ks.keys[kid]
	return k, ok
}

// Keys returns the keys sorted by kid.
func (ks *KeySet) Keys() []*PublicKey {
	out := make([]*PublicKey, 0, len(ks.keys))
	for _, k := range ks.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kid < out[j].kid })
	return out
}

// MarshalJSON encodes the set as a JWKS document ({"keys":[...]}).
func (ks *KeySet) MarshalJSON() ([]byte, error) {
	var doc struct {
		Keys []jose.JSONWebKey `json:"keys"`
	}
	doc.Keys = []jose.JSONWebKey{}
	for _, k := range ks.Keys() {
		doc.Keys = append(doc.Keys, k.JWK())
	}
	return json.Marshal(doc)
}

// ParseKeySet decodes a JWKS document strictly. Every key must carry a kid
// and an alg from the allow-list that fits its type.
func ParseKeySet(data []byte) (*KeySet, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	rawKeys, ok := obj["keys"]
	if !ok || len(obj) != 1 {
		return nil, errString("jwks: must be an object with exactly a \"keys\" member")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(rawKeys, &list); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := make([]*PublicKey, 0, len(list))
	for _, raw := range list {
		k, err := ParsePublicJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		var meta struct {
			Kid string `json:"kid"`
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil || meta.Kid == "" || meta.Alg == "" {
			return nil, errString("jwks: every key needs kid and alg")
		}
		keys = append(keys, k)
	}
	return NewKeySet(keys...)
}
