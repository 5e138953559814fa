package protocol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/sigil-ws/sigil/internal/strictjson"
)

// Body encryption (spec.md §11). A content key is a 256-bit AES-GCM key with
// a kid and a scope. Bodies are sealed as JWE compact with the protected
// header exactly {"alg":"dir","enc":"A256GCM","kid":...}. Content keys reach
// a client wrapped with ECDH-ES+A256KW to the P-256 key it sent in hello.

// ContentKeySize is the size of every content key in bytes.
const ContentKeySize = 32

// Scopes of content keys.
const (
	ScopeSession       = "session" // the session's own key: every encrypted frame but pub
	ScopeChannelPrefix = "ch:"     // "ch:<channel>": a channel's key, for pub and its deliveries
)

// ChannelScope returns the scope of a channel's content key.
func ChannelScope(channel string) string { return ScopeChannelPrefix + channel }

// ContentKey is a symmetric key for body encryption.
type ContentKey struct {
	ID    string // kid
	Key   []byte // 32 bytes
	Scope string // ScopeSession or ChannelScope(ch)
}

// String never prints key material.
func (k *ContentKey) String() string { return "ContentKey(" + k.ID + ", " + k.Scope + ")" }

// NewContentKey makes a random content key. A nil rand means crypto/rand.
func NewContentKey(scope string, r io.Reader) (*ContentKey, error) {
	if r == nil {
		r = rand.Reader
	}
	k := make([]byte, ContentKeySize)
	if _, err := io.ReadFull(r, k); err != nil {
		return nil, err
	}
	id, err := newUUID(r)
	if err != nil {
		return nil, err
	}
	return &ContentKey{ID: id, Key: k, Scope: scope}, nil
}

// ContentKeys looks up content keys by kid. KeyRing implements it.
type ContentKeys interface {
	ContentKey(kid string) (*ContentKey, bool)
}

// KeyRing is a concurrency-safe set of content keys with expiry, used by
// both ends to keep current and recently rotated keys.
type KeyRing struct {
	now  func() time.Time
	mu   sync.RWMutex
	keys map[string]ringEntry
}

type ringEntry struct {
	key    *ContentKey
	expiry time.Time // zero: no expiry
}

// NewKeyRing returns an empty key ring whose expiries are read on the
// clock now; nil means time.Now. Give it the clock that computes the
// expiries passed to Add and Expire.
func NewKeyRing(now func() time.Time) *KeyRing {
	if now == nil {
		now = time.Now
	}
	return &KeyRing{now: now, keys: map[string]ringEntry{}}
}

// Add stores k; a zero expiry keeps it until removed.
func (r *KeyRing) Add(k *ContentKey, expiry time.Time) {
	r.mu.Lock()
	r.keys[k.ID] = ringEntry{k, expiry}
	r.mu.Unlock()
}

// Expire sets the expiry of key kid (for the grace period after rotation).
func (r *KeyRing) Expire(kid string, at time.Time) {
	r.mu.Lock()
	if e, ok := r.keys[kid]; ok {
		e.expiry = at
		r.keys[kid] = e
	}
	r.mu.Unlock()
}

// ContentKey implements ContentKeys. Expired keys are not returned.
func (r *KeyRing) ContentKey(kid string) (*ContentKey, bool) {
	r.mu.RLock()
	e, ok := r.keys[kid]
	r.mu.RUnlock()
	if !ok || (!e.expiry.IsZero() && r.now().After(e.expiry)) {
		return nil, false
	}
	return e.key, true
}

// SealBody encrypts plaintext (a JSON value) under k as JWE compact.
func SealBody(k *ContentKey, plaintext []byte) (string, error) {
	if len(k.Key) != ContentKeySize {
		return "", errString("content key must be 32 bytes")
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: k.Key, KeyID: k.ID}, nil)
	if err != nil {
		return "", err
	}
	obj, err := enc.Encrypt(plaintext)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// OpenBody decrypts an enc member. The key must exist in keys and have the
// given scope. Errors are *Error with CodeBadEnc.
func OpenBody(enc string, keys ContentKeys, scope string) ([]byte, error) {
	out, err := openBody(enc, keys, scope)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func openBody(enc string, keys ContentKeys, scope string) ([]byte, *Error) {
	segs := strings.Split(enc, ".")
	if len(segs) != 5 || segs[1] != "" {
		return nil, newErr(CodeBadEnc, "enc must be a JWE compact with alg dir")
	}
	if !canonicalSegments(segs) {
		return nil, newErr(CodeBadEnc, "enc segments must be canonical unpadded base64url")
	}
	hraw, err := decodeSegment([]byte(segs[0]))
	if err != nil {
		return nil, newErr(CodeBadEnc, "enc header is not base64url")
	}
	h, err := decodeObject(hraw)
	if err != nil || len(h) != 3 {
		return nil, newErr(CodeBadEnc, "enc header must be exactly alg, enc and kid")
	}
	alg, _, e1 := h.str("alg", true, 16)
	encAlg, _, e2 := h.str("enc", true, 16)
	kid, _, e3 := h.str("kid", true, 128)
	if e1 != nil || e2 != nil || e3 != nil || alg != "dir" || encAlg != "A256GCM" {
		return nil, newErr(CodeBadEnc, "enc header must be exactly {alg: dir, enc: A256GCM, kid}")
	}
	if keys == nil {
		return nil, newErr(CodeBadEnc, "body encryption was not negotiated for this session")
	}
	k, ok := keys.ContentKey(kid)
	if !ok || k.Scope != scope {
		return nil, newErr(CodeBadEnc, "enc kid names no current content key for scope %s", quote(scope))
	}
	obj, err := jose.ParseEncryptedCompact(enc, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, wrapErr(CodeBadEnc, err, "enc does not parse")
	}
	plain, err := obj.Decrypt(k.Key)
	if err != nil {
		return nil, wrapErr(CodeBadEnc, err, "enc does not decrypt (bad tag or key)")
	}
	if _, err := decodeJSONValue(plain); err != nil {
		return nil, wrapErr(CodeBadEnc, err, "decrypted body is not strict JSON")
	}
	return plain, nil
}

// canonicalSegments reports whether every segment of a compact JOSE
// object is canonical unpadded base64url (spec.md §5.1): go-jose ignores
// spare bits, so without this one JWE would have many spellings.
func canonicalSegments(segs []string) bool {
	for _, s := range segs {
		if !canonicalB64String(s) {
			return false
		}
	}
	return true
}

// decodeJSONValue checks that data is one strict JSON value of bounded depth.
func decodeJSONValue(data []byte) (any, error) {
	return nil, strictjson.Valid(data, MaxDepth)
}

// GenerateAgreementKey makes a P-256 key pair for key agreement: the client
// sends its public half as "ekey" in hello.
func GenerateAgreementKey(r io.Reader) (*ecdsa.PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	return ecdsa.GenerateKey(elliptic.P256(), r)
}

// ParseAgreementJWK decodes a client's "ekey" (spec.md §8.2 step 6, §3.3):
// a public P-256 JWK (kty EC) with the members a public JWK may have, no
// alg other than ECDH-ES+A256KW, no use other than enc, and key_ops, if
// present, empty.
func ParseAgreementJWK(data []byte) (*ecdsa.PublicKey, error) {
	if err := checkPublicJWK(data, "enc"); err != nil {
		return nil, fmt.Errorf("ekey: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("ekey: %w", err)
	}
	pub, ok := jwk.Key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errString("ekey: must be a public P-256 key")
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(jose.ECDH_ES_A256KW) {
		return nil, errString("ekey: alg must be ECDH-ES+A256KW")
	}
	return pub, nil
}

// AgreementJWK encodes the public half of an agreement key for hello.
func AgreementJWK(priv *ecdsa.PrivateKey) ([]byte, error) {
	return json.Marshal(jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: string(jose.ECDH_ES_A256KW), Use: "enc"})
}

// wrappedKey is the plaintext of a key-wrap JWE: an oct JWK plus its scope.
type wrappedKey struct {
	Kty   string `json:"kty"`
	Kid   string `json:"kid"`
	K     string `json:"k"`
	Alg   string `json:"alg"`
	Scope string `json:"scope"`
}

// WrapContentKey encrypts k to the client's agreement key with
// ECDH-ES+A256KW / A256GCM. The plaintext is an oct JWK with a "scope" member.
func WrapContentKey(k *ContentKey, to *ecdsa.PublicKey) (string, error) {
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: to}, nil)
	if err != nil {
		return "", err
	}
	plain, err := json.Marshal(wrappedKey{Kty: "oct", Kid: k.ID, K: b64.EncodeToString(k.Key), Alg: "A256GCM", Scope: k.Scope})
	if err != nil {
		return "", err
	}
	obj, err := enc.Encrypt(plain)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// UnwrapContentKey reverses WrapContentKey with the agreement private key,
// refusing everything spec.md §11.3 refuses: segments that are not
// canonical base64url; a protected header with members other than alg
// (ECDH-ES+A256KW), enc (A256GCM), epk (exactly kty EC, crv P-256, x, y)
// and empty apu/apv; a content-encryption key that is not 32 bytes; and a
// plaintext that is not exactly {kty: oct, kid, k (32 bytes), alg: A256GCM,
// scope: session or ch:<channel>}. The caller checks that the scope is the
// one expected where the key arrived. Errors are *Error with CodeBadEnc.
func UnwrapContentKey(jwe string, priv *ecdsa.PrivateKey) (*ContentKey, error) {
	k, err := unwrapContentKey(jwe, priv)
	if err != nil {
		return nil, err
	}
	return k, nil
}

func unwrapContentKey(jwe string, priv *ecdsa.PrivateKey) (*ContentKey, *Error) {
	segs := strings.Split(jwe, ".")
	if len(segs) != 5 || !canonicalSegments(segs) {
		return nil, newErr(CodeBadEnc, "wrapped key must be a JWE compact of canonical base64url segments")
	}
	if err := checkWrapHeader(segs[0]); err != nil {
		return nil, wrapErr(CodeBadEnc, err, "wrapped key header: "+err.Error())
	}
	obj, err := jose.ParseEncryptedCompact(jwe, []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, wrapErr(CodeBadEnc, err, "wrapped key does not parse")
	}
	// go-jose refuses a content-encryption key whose size is not the one
	// of enc (32 bytes for A256GCM).
	plain, err := obj.Decrypt(priv)
	if err != nil {
		return nil, wrapErr(CodeBadEnc, err, "wrapped key does not decrypt")
	}
	k, err := decodeWrappedKey(plain)
	if err != nil {
		return nil, wrapErr(CodeBadEnc, err, "wrapped key: "+err.Error())
	}
	return k, nil
}

// checkWrapHeader checks the protected header of a wrapped key: exactly
// alg, enc and epk, and at most empty apu and apv.
func checkWrapHeader(seg string) error {
	raw, err := decodeSegment([]byte(seg))
	if err != nil {
		return err
	}
	h, err := decodeObject(raw)
	if err != nil {
		return err
	}
	for name, v := range h {
		switch name {
		case "alg", "enc", "epk":
		case "apu", "apv":
			if string(v) != `""` {
				return errString(name + " must be empty")
			}
		default:
			return errString("member " + quote(name) + " is not allowed")
		}
	}
	alg, _, e1 := h.str("alg", true, 32)
	enc, _, e2 := h.str("enc", true, 32)
	if e1 != nil || e2 != nil || alg != string(jose.ECDH_ES_A256KW) || enc != string(jose.A256GCM) {
		return errString("alg must be ECDH-ES+A256KW and enc A256GCM")
	}
	epkRaw, ok := h["epk"]
	if !ok {
		return errString("epk is required")
	}
	epk, err := decodeObject(epkRaw)
	if err != nil || len(epk) != 4 {
		return errString("epk must be exactly {kty, crv, x, y}")
	}
	if _, err := ParseAgreementJWK(epkRaw); err != nil { // members (§3.3), and a point on P-256
		return fmt.Errorf("epk: %w", err)
	}
	for _, m := range []string{"kty", "crv", "x", "y"} {
		if _, ok := epk[m]; !ok {
			return errString("epk must be exactly {kty, crv, x, y}")
		}
	}
	return nil
}

// decodeWrappedKey decodes the plaintext of a wrapped key: exactly the
// five members of wrappedKey, strict.
func decodeWrappedKey(plain []byte) (*ContentKey, error) {
	obj, err := decodeObject(plain)
	if err != nil {
		return nil, err
	}
	var w wrappedKey
	for name := range obj {
		var dst *string
		switch name {
		case "kty":
			dst = &w.Kty
		case "kid":
			dst = &w.Kid
		case "k":
			dst = &w.K
		case "alg":
			dst = &w.Alg
		case "scope":
			dst = &w.Scope
		default:
			return nil, errString("member " + quote(name) + " is not allowed")
		}
		if *dst, _, err = obj.str(name, true, maxStringClaim); err != nil {
			return nil, err
		}
	}
	if len(obj) != 5 {
		return nil, errString("must be exactly {kty, kid, k, alg, scope}")
	}
	if w.Kty != "oct" || w.Alg != string(jose.A256GCM) {
		return nil, errString("must be an A256GCM oct JWK")
	}
	if !validScope(w.Scope) {
		return nil, errString("scope must be session or ch:<channel>")
	}
	key, err := decodeSegment([]byte(w.K))
	if err != nil || !canonicalB64String(w.K) || len(key) != ContentKeySize {
		return nil, errString("k must be 32 bytes in canonical unpadded base64url")
	}
	return &ContentKey{ID: w.Kid, Key: key, Scope: w.Scope}, nil
}

// validScope reports whether s is a content-key scope: session, or ch:
// followed by a channel name.
func validScope(s string) bool {
	if s == ScopeSession {
		return true
	}
	ch, ok := strings.CutPrefix(s, ScopeChannelPrefix)
	return ok && ValidChannel(ch)
}
